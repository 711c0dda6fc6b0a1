"""The teacher of a relabel job: its file's sha256 (part of the version id) and the loaded
network, both cached per process so that a worker labelling many shards loads it once.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Literal

import torch
from torch import nn

from mlb.checkpoint import checkpoint_sha256, load_model
from mlb.inference import (
    prepare_model,
)


def teacher_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of the teacher file, cached per (path, size, mtime) in this process."""
    resolved = os.path.abspath(path)
    if not os.path.isfile(resolved):
        raise FileNotFoundError(f"teacher checkpoint not found: {resolved}")
    return checkpoint_sha256(resolved)



# --------------------------------------------------------------------------- teacher


_TEACHERS: dict[tuple[str, str, str, str], nn.Module] = {}
_TEACHERS_LOCK = threading.Lock()
_TEACHER_LOADS = [0]  # loads in this process (a list: mutable without `global`)


def cached_teacher(path: str, *, sha256: str, weights: Literal["model", "ema"],
                   device: torch.device) -> nn.Module:
    """The teacher in eval mode on ``device``, loaded once per process and key.

    Keyed by (path, sha256, weights, device); only the last key is kept, so a worker that
    switches teachers (the next EMA round) frees the previous one.
    """
    key = (os.path.abspath(path), sha256, weights, str(device))
    with _TEACHERS_LOCK:
        if key not in _TEACHERS:
            _TEACHERS.clear()
            model, _ = load_model(path, weights=weights, device="cpu")
            _TEACHERS[key] = prepare_model(model, device=device)
            _TEACHER_LOADS[0] += 1
        return _TEACHERS[key]


def this_process() -> dict[str, Any]:
    return {"process": f"{socket.gethostname()}:{os.getpid()}",
            "teacher_loads": _TEACHER_LOADS[0]}


