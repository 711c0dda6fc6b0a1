"""The one device decision: which torch device a request's ``device`` setting means.

Every request that runs a network (relabel, evaluate, predict, training, the EMA round) has a
``device`` field, ``"auto"`` or a torch device string; configs validate it with
:func:`check_device_name` and the code that runs resolves it with :func:`resolve_device`.
"""

from __future__ import annotations

import torch

__all__ = ["check_device_name", "resolve_device"]


def check_device_name(device: str) -> str:
    """``device`` if it is ``"auto"`` or a torch device string, else ValueError naming it."""
    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"device {device!r} is not 'auto' or a torch device string such "
                             f"as 'cpu', 'cuda', 'cuda:1' ({error})") from None
    return device


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` / None -> ``cuda`` if available, else ``cpu``; anything else as given, and a
    ValueError naming it when it asks for CUDA on a machine without it."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available here")
    return resolved
