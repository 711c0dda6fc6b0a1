"""The network interface every matting model meets, and the adapter for those that do not.

Contract: ``forward(image)`` takes ``(B, 3, H, W)`` float RGB in [0, 1], any H, W >= 1, and
returns :class:`MattingOutput` ``(alpha, boundary_logit)``, both ``(B, 1, H, W)``.

Padding to the network's stride and the crop back happen once, in :class:`StridedMattingNet`
(the built-in networks subclass it and implement ``forward_padded``) or in
:class:`PluginAdapter` (which wraps any ``nn.Module`` a plugin factory returns).

Boundary head: the training recipes supervise ``boundary_logit`` with BCE against the band
``1[0.05 < alpha < 0.95]`` (method.md section 1). A plugin network that returns only an alpha
tensor gets :class:`BoundaryHead` attached: two 3x3 conv layers over ``[image, alpha]`` at full
resolution, trained by that same loss; the alpha it reads is not detached, so the boundary
loss also shapes the network's edges.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MattingOutput(NamedTuple):
    """Both ``(B, 1, H, W)`` float: ``alpha`` in [0, 1], ``boundary_logit`` unbounded.

    A NamedTuple (not a dict or dataclass) so that ``torch.onnx.export`` and
    ``torch.compile`` see a plain tuple of tensors.
    """

    alpha: Tensor
    boundary_logit: Tensor


def pad_to_stride(image: Tensor, stride: int) -> Tensor:
    """Replicate-pad bottom and right so H and W become multiples of ``stride``.

    Replicate, not reflect: reflect needs the pad to be smaller than the side, which fails on
    inputs smaller than the stride; replicate works for any size and exports with dynamic H, W.
    """
    height, width = image.shape[-2], image.shape[-1]
    pad_bottom = (stride - height % stride) % stride
    pad_right = (stride - width % stride) % stride
    return F.pad(image, (0, pad_right, 0, pad_bottom), mode="replicate")


class StridedMattingNet(nn.Module):
    """Base of the built-in networks: pad to ``stride``, ImageNet-normalise, crop back.

    Subclasses set ``stride`` and implement ``forward_padded(x, image)`` where ``x`` is the
    normalised padded image and ``image`` the padded one in [0, 1]; it returns ``(alpha,
    boundary_logit)`` at the padded size.
    """

    stride: int = 32

    def __init__(self) -> None:
        super().__init__()
        # not persistent: constants, so they stay out of checkpoints' state_dicts
        mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward_padded(self, x: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, image: Tensor) -> MattingOutput:
        height, width = image.shape[-2], image.shape[-1]
        padded = pad_to_stride(image, self.stride)
        alpha, boundary_logit = self.forward_padded((padded - self.mean) / self.std, padded)
        return MattingOutput(alpha[..., :height, :width], boundary_logit[..., :height, :width])


class BoundaryHead(nn.Module):
    """``boundary_logit`` from the image and a predicted alpha: conv-BN-ReLU, conv."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(4, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 3, padding=1),
        )

    def forward(self, image: Tensor, alpha: Tensor) -> Tensor:
        return self.layers(torch.cat([image, alpha], dim=1))


# The probe input used once, at build time, to learn what a plugin network returns.
_PROBE_SIZE = 64


class PluginAdapter(nn.Module):
    """Makes any network meet the contract.

    ``network(image)`` receives the image padded to ``stride`` (the network's own ``stride``
    attribute, else 32) in [0, 1] (a network normalises as it needs) and returns either
    ``(alpha, boundary_logit)`` (a tuple or :class:`MattingOutput`) or an alpha tensor
    ``(B, 1, H', W')`` in [0, 1]; for the latter a :class:`BoundaryHead` is attached. Outputs
    are cropped back to ``(H, W)``.
    """

    def __init__(self, network: nn.Module, *, description: str) -> None:
        super().__init__()
        self.network = network
        self.stride = int(getattr(network, "stride", 32))
        if self.stride < 1:
            raise ValueError(f"{description}: stride must be >= 1, got {self.stride}")
        self.boundary_head = BoundaryHead() if self._returns_alpha_only(description) else None

    def _returns_alpha_only(self, description: str) -> bool:
        was_training = self.network.training
        self.network.eval()
        probe = torch.rand(1, 3, _PROBE_SIZE, _PROBE_SIZE)
        try:
            with torch.no_grad():
                output = self.network(probe)
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(f"{description}: forward fails on a {probe.shape} image in [0, 1]: "
                             f"{error}") from error
        finally:
            self.network.train(was_training)
        if isinstance(output, Tensor):
            _check_map(output, description, "alpha")
            return True
        if isinstance(output, tuple) and len(output) == 2:
            for tensor, name in zip(output, ("alpha", "boundary_logit"), strict=True):
                _check_map(tensor, description, name)
            return False
        raise ValueError(
            f"{description}: forward must return an alpha tensor or (alpha, boundary_logit), "
            f"got {type(output).__name__}"
        )

    def forward(self, image: Tensor) -> MattingOutput:
        height, width = image.shape[-2], image.shape[-1]
        padded = pad_to_stride(image, self.stride)
        output = self.network(padded)
        if self.boundary_head is not None:
            alpha, boundary_logit = output, self.boundary_head(padded, output)
        else:
            alpha, boundary_logit = output
        return MattingOutput(alpha[..., :height, :width], boundary_logit[..., :height, :width])


def _check_map(tensor: object, description: str, name: str) -> None:
    expected = (1, 1, _PROBE_SIZE, _PROBE_SIZE)
    if not isinstance(tensor, Tensor) or tuple(tensor.shape) != expected:
        found = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(
            f"{description}: {name} must be (B, 1, H, W) at the input size; a {expected[1:]} "
            f"probe gave {found}"
        )
