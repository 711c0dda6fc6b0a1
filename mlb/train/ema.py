"""The EMA copy of a network: the mean teacher of the next MLB round (method.md section 1).

``ema = momentum * ema + (1 - momentum) * model`` after every optimiser step, over every
floating-point entry of the state dict (weights and BatchNorm running statistics, as timm's
``ModelEmaV2`` does); integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["make_ema", "update_ema"]


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` (same device and dtype) that starts at its weights."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, *, momentum: float) -> None:
    """Move ``ema`` towards ``model`` in place: ``ema = momentum * ema + (1 - momentum) * model``.

    Both must have the same architecture; ``momentum`` in [0, 1) (0 copies the model).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
    model_state = model.state_dict()
    for name, average in ema.state_dict().items():
        current = model_state[name].detach()
        if average.is_floating_point():
            average.lerp_(current.to(average.dtype), 1.0 - momentum)
        else:
            average.copy_(current)
