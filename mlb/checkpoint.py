"""Checkpoints: weights plus everything needed to rebuild, resume and trace them.

A checkpoint is a plain dict of tensors and JSON-like values written with ``torch.save`` and
read with ``torch.load(weights_only=True)``: loading never unpickles arbitrary objects, so a
checkpoint can never run code. It carries the model config (to rebuild the network), the
optional EMA weights (the next mean-teacher), optimizer state and step (to resume),
the training config, the label version it learned from, and its metrics.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mlb.models import ModelConfig, build_model_from_config

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

    def to_payload(self) -> dict[str, Any]:
        return {
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


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): a crash mid-save never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One partial file per writer: two writers of one path (a job and a stale process of an
    # earlier one) never interleave their bytes; the last complete rename wins. The writer's
    # pid names a folder, not the file: torch.save names its archive after the file, so
    # ``<name>.partial`` keeps a checkpoint's bytes (and a teacher's sha256, hence version
    # ids) independent of the process that wrote it, as in the previous release.
    folder = path.with_name(f".{path.name}.{os.getpid()}.partial")
    folder.mkdir(exist_ok=True)
    partial = folder / f"{path.name}.partial"
    try:
        torch.save(checkpoint.to_payload(), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another thread's partial: its writer removes it
            folder.rmdir()
    return path


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Decode ``path`` safely; every failure is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses any object that would need code to rebuild.
        raise CheckpointError(
            f"{path} is not a safe mlb checkpoint (it holds objects that would run code): "
            f"{str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path} is damaged or not a checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not an {FORMAT} file (found format {found!r})")
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
    )


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
