"""Checkpoints: weights plus everything needed to rebuild, resume and trace them.

A checkpoint is a plain dict of tensors and JSON-like values written with ``torch.save`` and
read with ``torch.load(weights_only=True)``: loading never unpickles arbitrary objects, so a
checkpoint can never run code. It carries the model config (to rebuild the network), the
optional EMA weights (the next mean-teacher), optimizer state and step (to resume),
the training config, the label version it learned from, and its metrics.

Lineage (``lineage``, written since the lineage release): the label store (an absolute path
or URL), the label version, and the path and sha256 of the checkpoint it started from
(``init``) and of the teacher that made its labels, so that ``mlb checkpoint show`` can
trace it without the paths it was trained with. Files without it still load (``lineage`` is
then empty), and a checkpoint without lineage is written without the key, byte for byte as
before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError
from torch import nn

from mlb.config import validation_text
from mlb.labels.store import file_sha256
from mlb.models import ModelConfig, build_model_from_config
from mlb.safe_load import load_tensors

FORMAT = "mlb-checkpoint/1"

Weights = Literal["model", "ema"]


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, unsafe, or does not fit the network."""


@dataclass(frozen=True)
class Checkpoint:
    """The decoded contents of a checkpoint file (state dicts stay on the CPU)."""

    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    kind: str = "model"
    ema_state_dict: dict[str, torch.Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None
    step: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)
    label_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per-step training log as columns (``step``, ``lr``, loss terms): the loss curve,
    carried so that a resumed run continues it."""
    lineage: dict[str, Any] = field(default_factory=dict)
    """Plain JSON: ``store`` (absolute path or URL), ``label_version``, ``init`` and ``teacher``
    (each ``{"path", "sha256"}``); empty for files written before it existed."""

    def to_payload(self) -> dict[str, Any]:
        payload = {
            "format": FORMAT,
            "kind": self.kind,
            "model_config": self.model_config.model_dump(),
            "state_dict": self.state_dict,
            "ema_state_dict": self.ema_state_dict,
            "optimizer_state": self.optimizer_state,
            # No scheduler state is kept (the schedule is a function of the step); the key
            # stays, always None, so files read the same in the previous release.
            "scheduler_state": None,
            "step": self.step,
            "train_config": self.train_config,
            "label_version": self.label_version,
            "metrics": self.metrics,
            "history": self.history,
        }
        if self.lineage:  # absent otherwise: such files keep the bytes the last release wrote
            payload["lineage"] = self.lineage
        return payload


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file, cached per (absolute path, size, mtime) in this process;
    FileNotFoundError naming the path."""
    resolved = os.path.abspath(path)
    stat = os.stat(resolved)
    key = (resolved, stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(resolved)
    return _SHA_CACHE[key]


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): a crash mid-save never leaves a torn file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder; a checkpoint path must name "
                                "a file (e.g. runs/student.pt)")
    # The partial's name is part of the bytes (torch names the archive after the file), so
    # it is fixed: the same weights saved at the same path give the same sha256, which is
    # part of every label version id made with them.
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint.to_payload(), partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as error:
        # torch reports a full disk as "enforce fail at inline_container.cc": name the file
        # and the free space instead. The .partial is removed; ``path`` keeps its old bytes.
        with contextlib.suppress(OSError):
            partial.unlink()
        free = _free_bytes(path.parent)
        full = getattr(error, "errno", None) == errno.ENOSPC or (
            isinstance(error, RuntimeError) and free is not None and free < 2**20)
        reason = ("no space left on the device" if full else
                  "the write failed" if isinstance(error, RuntimeError) else _first_line(error))
        raise OSError(errno.ENOSPC if full else getattr(error, "errno", None) or errno.EIO,
                      f"cannot save checkpoint {path}: {reason} ({_free_text(path.parent)}); "
                      "free space or choose another --out, then rerun with --resume") from None
    return path


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _free_text(folder: Path) -> str:
    free = _free_bytes(folder)
    return ("free space unknown" if free is None
            else f"{free / 2**20:.1f} MiB free on the disk holding {folder}")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Decode ``path`` safely; every failure is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    payload = load_tensors(path, what="checkpoint", error=CheckpointError)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not an {FORMAT} file (found format {found!r})")
    try:
        return _decoded(path, payload)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, CheckpointError):
            raise
        # A file that claims the format but lacks a part, or holds one of the wrong type.
        text = validation_text(error) if isinstance(error, ValidationError) else str(error)
        reason = f"missing {error}" if isinstance(error, KeyError) else " ".join(
            text.split())[:300]
        raise CheckpointError(f"{path} is damaged: {reason}") from error


def _decoded(path: Path, payload: dict[str, Any]) -> Checkpoint:
    for name, kind in (("kind", str), ("step", int), ("train_config", dict),
                       ("metrics", dict), ("state_dict", dict)):
        if not isinstance(payload[name], kind):
            raise CheckpointError(f"{path} is damaged: its {name} is a "
                                  f"{type(payload[name]).__name__}, expected {kind.__name__}")
    return Checkpoint(
        model_config=ModelConfig.model_validate(payload["model_config"]),
        state_dict=payload["state_dict"],
        kind=payload["kind"],
        ema_state_dict=payload["ema_state_dict"],
        optimizer_state=payload["optimizer_state"],
        step=payload["step"],
        train_config=payload["train_config"],
        label_version=payload["label_version"],
        metrics=payload["metrics"],
        history=payload.get("history", {}),  # absent in files written before it existed
        lineage=_lineage(path, payload.get("lineage", {})),
    )


def _lineage(path: Path, lineage: object) -> dict[str, Any]:
    if not isinstance(lineage, dict):
        raise CheckpointError(f"{path} is damaged: its lineage is a "
                              f"{type(lineage).__name__}, expected a dict")
    return lineage


def load_model(
    path: str | os.PathLike,
    *,
    weights: Weights = "model",
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the network of ``path`` with its weights, in eval mode on ``device``.

    ``weights="ema"`` takes the EMA copy (the mean teacher of the next round) and fails
    clearly when the checkpoint has none.
    """
    checkpoint = read_checkpoint(path)
    state = checkpoint.state_dict if weights == "model" else checkpoint.ema_state_dict
    if state is None:
        raise CheckpointError(f"{path} holds no EMA weights (weights='ema' was asked for)")
    # The full state_dict follows: the pretrained-encoder file named in the config is not
    # needed (and may no longer exist on this machine).
    model = build_model_from_config(checkpoint.model_config, load_pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit {checkpoint.model_config.name}: "
            f"{str(error).splitlines()[0]}"
        ) from error
    return model.to(device).eval(), checkpoint


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    model_config: ModelConfig,
    weights: Weights = "model",
) -> Checkpoint:
    """Load ``path``'s weights into ``model`` (built from ``model_config``), e.g. ``--init``.

    A checkpoint of another architecture is a :class:`CheckpointError` naming both, checked
    before any tensor is copied; so are missing EMA weights and tensors that do not fit.
    """
    checkpoint = read_checkpoint(path)
    if checkpoint.model_config.name != model_config.name:
        raise CheckpointError(
            f"{path} holds a {checkpoint.model_config.name} network, but {model_config.name} "
            f"was asked for; initialise from a checkpoint of the same architecture"
        )
    state = checkpoint.state_dict if weights == "model" else checkpoint.ema_state_dict
    if state is None:
        raise CheckpointError(f"{path} holds no EMA weights (weights='ema' was asked for)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit {model_config.name}: {str(error).splitlines()[0]}"
        ) from error
    return checkpoint
