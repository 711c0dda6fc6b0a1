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

from mlb.checkpoint import load_model
from mlb.inference import prepare_model
from storage import file_sha256

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def teacher_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of the teacher file, cached per (path, size, mtime) in this process."""
    resolved = os.path.abspath(path)
    if not os.path.isfile(resolved):
        raise FileNotFoundError(f"teacher checkpoint not found: {resolved}")
    stat = os.stat(resolved)
    key = (resolved, stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(resolved)
    return _SHA_CACHE[key]


# --------------------------------------------------------------------------- teacher


class TeacherCache:
    """The teacher network of this process, loaded once per key and reused by every shard.

    Keyed by (path, sha256, weights, device, channels_last); only the last key is kept, so a
    worker that switches teachers (the next EMA round) frees the previous one. Thread-safe.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str, str, bool], nn.Module] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """Teachers loaded so far (stays 1 on a worker that labels many shards)."""

    def get(self, path: str, *, sha256: str, weights: Literal["model", "ema"],
            device: torch.device, channels_last: bool = True) -> nn.Module:
        """The teacher in eval mode on ``device``."""
        key = (os.path.abspath(path), sha256, weights, str(device), channels_last)
        with self._lock:
            if key not in self._models:
                self._models.clear()
                model, _ = load_model(path, weights=weights, device="cpu")
                self._models[key] = prepare_model(model, device=device,
                                                  channels_last=channels_last)
                self.loads += 1
            return self._models[key]


# One per process: Dask workers and loader processes each build their own on first use.
TEACHERS = TeacherCache()


def this_process() -> dict[str, Any]:
    return {"process": f"{socket.gethostname()}:{os.getpid()}",
            "teacher_loads": TEACHERS.loads}
