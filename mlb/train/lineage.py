"""Lineage both ways: what a checkpoint was trained from, and what was trained on a version.

- In the checkpoint (``Checkpoint.lineage``): the label store (an absolute path or URL), the
  label version, and the path and sha256 of the ``init`` checkpoint and of the teacher that made
  the labels. Hashes, because paths move and files get replaced: the sha256 says which bytes.
- Beside the label version (``LabelStore.record_training``): one small record per checkpoint,
  written when its training starts, so that ``mlb labels show V`` lists the students trained
  on V even while they train. One file per checkpoint path: concurrent trainings never lose
  each other's records, and a resumed or restarted run rewrites its own.

Recording is best effort: a store on a read-only disk can still be trained from (the
checkpoint keeps its lineage); the missed record is logged as a warning.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlb.checkpoint import CheckpointError, checkpoint_sha256, read_checkpoint
from mlb.labels.metadata import LabelVersionMetadata
from mlb.labels.store import LabelStore, LabelStoreError, LabelVersion, store_location

__all__ = ["CheckpointInfo", "FileRef", "describe_checkpoint", "record_key", "record_training",
           "run_lineage"]

logger = logging.getLogger(__name__)


def run_lineage(*, init: str | None, store: str | None = None,
                version: LabelVersion | None = None) -> dict[str, Any]:
    """The ``lineage`` a run's checkpoint carries (plain JSON). A run from fresh weights
    records ``"init": None``, so it reads "none", not "not recorded" as a checkpoint written
    before lineage was kept (no ``lineage`` key at all)."""
    lineage: dict[str, Any] = {"init": None}
    if version is not None and store is not None:
        teacher = LabelVersionMetadata.parse(version.metadata).teacher
        lineage.update(store=store_location(store), label_version=version.version_id,
                       teacher={"path": teacher.path, "sha256": teacher.sha256})
    if init is not None:
        lineage["init"] = {"path": os.path.abspath(init), "sha256": checkpoint_sha256(init)}
    return lineage


def record_key(checkpoint: str | os.PathLike[str]) -> str:
    """The record's file name: one per absolute checkpoint path."""
    return hashlib.sha256(os.path.abspath(checkpoint).encode()).hexdigest()[:16]


def record_training(lineage: dict[str, Any], *, checkpoint: str | os.PathLike[str], kind: str,
                    model: str, steps: int) -> str | None:
    """Record beside ``lineage``'s label version that ``checkpoint`` trains on it; the
    record's path, or None when the store cannot be written (logged)."""
    record = {
        "label_version": lineage["label_version"],
        "checkpoint": os.path.abspath(checkpoint),
        "kind": kind, "model": model, "steps": steps,
        "init_sha256": (lineage.get("init") or {}).get("sha256"),
        "teacher_sha256": lineage["teacher"]["sha256"],
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }
    try:
        return LabelStore(lineage["store"]).record_training(
            lineage["label_version"], record_key(checkpoint), record)
    except (OSError, LabelStoreError) as error:
        logger.warning("training of %s not recorded beside label version %s in %s (%s); "
                       "the checkpoint keeps its lineage", checkpoint, lineage["label_version"],
                       lineage["store"], " ".join(str(error).split()))
        return None


class FileRef(BaseModel):
    """A file a checkpoint came from: where it was, and which bytes (sha256)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    path: str | None = None
    sha256: str | None = None


class CheckpointInfo(BaseModel):
    """What ``mlb checkpoint show`` prints: a checkpoint's network, lineage, steps, metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str
    kind: str
    network: dict[str, Any]
    steps: int = Field(ge=0)
    planned_steps: int | None
    """The run's total: ``pretrain_steps`` for a segmentation-only (pre-training) teacher,
    the training's ``steps`` otherwise."""
    label_version: str | None
    store: str | None
    """Absolute path or URL, or the path as the training was given it (older checkpoints)."""
    store_is_absolute: bool
    init: FileRef | None
    teacher: FileRef | None
    ema_weights: bool
    metrics: dict[str, float | None]
    world_size: int | None
    mlb_version: str | None
    lineage_recorded: bool
    """False for checkpoints written before lineage was kept: hashes are then unknown."""
    loss: dict[str, Any] = Field(default_factory=dict)
    """The run's loss settings (``LossConfig`` fields) as its request recorded them."""


def describe_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read ``path`` (safely: ``read_checkpoint``) and describe it; CheckpointError naming the
    file when it is missing, damaged, unsafe or holds parts of the wrong type."""
    checkpoint = read_checkpoint(path)
    lineage, config = checkpoint.lineage, checkpoint.train_config
    request = config.get("request") if isinstance(config.get("request"), dict) else {}
    train = request.get("train") if isinstance(request.get("train"), dict) else {}
    try:
        return CheckpointInfo(
            path=os.path.abspath(path), sha256=checkpoint_sha256(path), kind=checkpoint.kind,
            network=checkpoint.model_config.model_dump(mode="json"), steps=checkpoint.step,
            planned_steps=(request.get("pretrain_steps") if checkpoint.kind == "teacher-pretrain"
                           else train.get("steps")),
            label_version=lineage.get("label_version", checkpoint.label_version),
            store=lineage.get("store", request.get("store")),
            store_is_absolute="store" in lineage, init=lineage.get("init"),
            teacher=lineage.get("teacher"), ema_weights=checkpoint.ema_state_dict is not None,
            metrics={str(name): _finite(value) for name, value in checkpoint.metrics.items()},
            world_size=config.get("world_size"), mlb_version=config.get("mlb_version"),
            lineage_recorded=bool(lineage),
            loss=request.get("loss") if isinstance(request.get("loss"), dict) else {})
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise CheckpointError(f"{path} is damaged: its {where} is {problem['input']!r:.80} "
                              f"({problem['msg']})") from None


def _finite(value: object) -> float | None:
    """A metric as JSON can hold it: NaN, infinities and non-numbers become None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
