"""Pretrained encoder weights: ``"imagenet"`` through a library's own cache, or a local file.

``"imagenet"`` never reaches the network when the machine is marked offline (``HF_HUB_OFFLINE``
or ``MLB_OFFLINE`` set, as the tests and CI do): only an already cached copy is used, and its
absence is a ``ValueError`` that says to pass a local file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mlb.models.encoder import _mismatches
from mlb.safe_load import load_tensors

IMAGENET = "imagenet"


def offline() -> bool:
    """True when downloads are off (``HF_HUB_OFFLINE`` or ``MLB_OFFLINE`` set, not 0)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in
               ("HF_HUB_OFFLINE", "MLB_OFFLINE"))


def read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained encoder weights not found: {path}")
    state = load_tensors(path, what="state_dict file")
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state_dict, found {type(state).__name__}")
    return state


def load_matching_weights(module: nn.Module, path: Path, *, what: str) -> None:
    """Load every tensor of ``module`` from ``path``; keys the module lacks (a classifier) are
    ignored, a missing key or another shape is a ``ValueError`` naming the first ones."""
    state = read_state_dict(path)
    expected = module.state_dict()
    problems = [p for p in _mismatches(expected, state) if not p.startswith("unexpected ")]
    if problems:
        raise ValueError(
            f"{path}: weights do not fit the {what} encoder; {len(problems)} mismatches, "
            f"first: {'; '.join(problems[:5])}"
        )
    module.load_state_dict({key: state[key] for key in expected})


def torchvision_imagenet(weights: object) -> dict[str, torch.Tensor]:
    """A torchvision ``WeightsEnum`` member's state_dict through torch.hub's cache."""
    url = weights.url  # type: ignore[attr-defined]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if offline() and not cached.is_file():
        raise ValueError(
            f"ImageNet weights are not cached ({cached}) and downloads are off "
            f"(HF_HUB_OFFLINE / MLB_OFFLINE); pass a local state_dict file instead "
            f"(--pretrained-encoder PATH)"
        )
    try:
        return weights.get_state_dict(progress=False)  # type: ignore[attr-defined]
    except OSError as error:
        raise ValueError(
            f"cannot fetch ImageNet weights from {url}: {error}; pass a local state_dict "
            f"file instead (--pretrained-encoder PATH)"
        ) from error
