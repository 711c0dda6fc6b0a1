"""Atrous spatial pyramid pooling (DeepLabv3) at the U-Net bottleneck (method.md section 1).

Differences from torchvision's DeepLabv3 ASPP, both for small inputs and export:
- the image-pooling branch has no BatchNorm: a pooled ``(B, C, 1, 1)`` tensor at batch 1 has a
  single value per channel, which BatchNorm refuses in training mode;
- the pooled vector is broadcast back with ``expand_as`` (an ONNX ``Expand`` over the traced
  shape) instead of an interpolation, so any feature-map size works, 1x1 included;
- no dropout: matting is regression and the student is trained against cached labels.
"""

import torch
from torch import Tensor, nn


def _conv_bn_relu(in_channels: int, out_channels: int, *, rate: int) -> nn.Sequential:
    """Rate 1 is the 1x1 branch; other rates are 3x3 convolutions dilated by ``rate``."""
    kernel = 1 if rate == 1 else 3
    padding = 0 if rate == 1 else rate
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=rate, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Module):
    """Global average -> 1x1 conv -> ReLU, broadcast to the input's spatial size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """``(B, in_channels, h, w)`` -> ``(B, out_channels, h, w)``, any h, w >= 1."""

    def __init__(
        self, in_channels: int, out_channels: int, *, rates: tuple[int, ...] = (1, 6, 12, 18)
    ) -> None:
        super().__init__()
        if not rates or any(rate < 1 for rate in rates):
            raise ValueError(f"ASPP rates must be a non-empty tuple of ints >= 1, got {rates}")
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, out_channels, rate=rate) for rate in rates]
        )
        self.pooling = ImagePooling(in_channels, out_channels)
        self.project = _conv_bn_relu(out_channels * (len(rates) + 1), out_channels, rate=1)

    def forward(self, x: Tensor) -> Tensor:
        pyramid = [branch(x) for branch in self.branches] + [self.pooling(x)]
        return self.project(torch.cat(pyramid, dim=1))
