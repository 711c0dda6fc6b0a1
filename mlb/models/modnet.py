"""MODNet (Ke et al., "MODNet: Real-Time Trimap-Free Portrait Matting via Objective
Decomposition", AAAI 2022), written from the paper's description.

```
image -> MobileNetV2 (torchvision) : enc2x (16 ch, /2), enc4x (24 ch, /4), enc32x (1280 ch, /32)
semantic branch (low resolution): enc32x -> SE block -> up x2, conv5x5 (96, /16)
                                  -> up x2, conv5x5 (32, /8) = lr8x
detail branch (high resolution):  [image/2, enc2x] -> conv s2 -> [., enc4x] -> hr4x
                                  [hr4x, up(lr8x), image/4] -> hr4x -> up -> [., enc2x] -> hr2x
                                  up(hr2x) + image -> detail head (full resolution)
fusion branch:                    up(lr8x) conv5x5 (16, /4) -> up -> [., hr2x] -> up
                                  -> [., image] -> alpha (sigmoid)
```
Convolutions use IBNorm (half the channels batch-normalised, half instance-normalised), as in
the paper. Differences, stated because the training recipe is ``mlb``'s, not MODNet's:

- the detail branch's head is the network's ``boundary_logit``. In MODNet it predicts the
  matte inside the transition region; here it is trained with BCE against that same region,
  ``1[0.05 < alpha < 0.95]``, so no extra head is attached;
- MODNet's auxiliary semantic output (a 1-channel /8 map with its own loss) is left out: the
  semantic branch learns through the fusion branch and the recipe's losses on alpha;
- the input is padded to a multiple of 32 and cropped back (no resize to 512).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import mobilenet_v2

from mlb.models.interface import StridedMattingNet

ENCODER_CHANNELS = (16, 24, 32, 96, 1280)  # MobileNetV2 at /2, /4, /8, /16, /32
HR_CHANNELS = 32
LR_CHANNELS = 32


INSTANCE_NORM_EPS = 1e-5


def _instance_norm(x: Tensor) -> Tensor:
    """``F.instance_norm`` without affine or running statistics, written out: the TorchScript
    ONNX exporter refuses instance_norm when the channel count is not static."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    variance = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(variance + INSTANCE_NORM_EPS)


class IBNorm(nn.Module):
    """Batch norm on the first half of the channels, instance norm on the rest."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.batch_channels = channels // 2
        self.batch = nn.BatchNorm2d(self.batch_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        batch, instance = x[:, : self.batch_channels], x[:, self.batch_channels :]
        return torch.cat([self.batch(batch), _instance_norm(instance)], dim=1)


def _conv(in_channels: int, out_channels: int, kernel: int, *, stride: int = 1,
          norm: bool = True, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride=stride,
                                         padding=kernel // 2, bias=not norm)]
    if norm:
        layers.append(IBNorm(out_channels))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SEBlock(nn.Module):
    """Squeeze-and-excitation channel attention on the /32 features (MODNet's e-ASPP stand-in)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[..., None, None]


def _up(x: Tensor, factor: float = 2.0) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 ``features``, returning the /2, /4 and /32 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = mobilenet_v2().features  # random init; weights are loaded by name

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        enc2x = enc4x = x
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == 1:
                enc2x = x
            elif index == 3:
                enc4x = x
        return enc2x, enc4x, x


class MODNet(StridedMattingNet):
    """MODNet with a MobileNetV2 backbone; see the module docstring for the layout."""

    stride = 32

    def __init__(self) -> None:
        super().__init__()
        enc2, enc4, _, enc16, enc32 = ENCODER_CHANNELS
        self.encoder = MobileNetV2Encoder()
        # semantic branch
        self.se = SEBlock(enc32)
        self.conv_lr16x = _conv(enc32, enc16, 5)
        self.conv_lr8x = _conv(enc16, LR_CHANNELS, 5)
        # detail branch
        self.tohr_enc2x = _conv(enc2, HR_CHANNELS, 1)
        self.conv_enc2x = _conv(HR_CHANNELS + 3, HR_CHANNELS, 3, stride=2)
        self.tohr_enc4x = _conv(enc4, HR_CHANNELS, 1)
        self.conv_enc4x = _conv(2 * HR_CHANNELS, 2 * HR_CHANNELS, 3)
        self.conv_hr4x = nn.Sequential(
            _conv(3 * HR_CHANNELS + 3, 2 * HR_CHANNELS, 3),
            _conv(2 * HR_CHANNELS, 2 * HR_CHANNELS, 3),
            _conv(2 * HR_CHANNELS, HR_CHANNELS, 3),
        )
        self.conv_hr2x = nn.Sequential(
            _conv(2 * HR_CHANNELS, 2 * HR_CHANNELS, 3),
            _conv(2 * HR_CHANNELS, HR_CHANNELS, 3),
            _conv(HR_CHANNELS, HR_CHANNELS, 3),
            _conv(HR_CHANNELS, HR_CHANNELS, 3),
        )
        self.conv_hr = nn.Sequential(
            _conv(HR_CHANNELS + 3, HR_CHANNELS, 3),
            _conv(HR_CHANNELS, 1, 1, norm=False, relu=False),  # -> boundary_logit
        )
        # fusion branch
        self.conv_lr4x = _conv(LR_CHANNELS, HR_CHANNELS, 5)
        self.conv_f2x = _conv(2 * HR_CHANNELS, HR_CHANNELS, 3)
        self.conv_f = nn.Sequential(
            _conv(HR_CHANNELS + 3, HR_CHANNELS // 2, 3),
            _conv(HR_CHANNELS // 2, 1, 1, norm=False, relu=False),
        )

    def forward_padded(self, x: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        enc2x, enc4x, enc32x = self.encoder(x)
        # semantic branch: /32 -> /8
        lr16x = self.conv_lr16x(_up(self.se(enc32x)))
        lr8x = self.conv_lr8x(_up(lr16x))
        # detail branch
        image2x = _up(x, 0.5)
        image4x = _up(x, 0.25)
        enc2x_hr = self.tohr_enc2x(enc2x)
        hr4x = self.conv_enc2x(torch.cat([image2x, enc2x_hr], dim=1))
        hr4x = self.conv_enc4x(torch.cat([hr4x, self.tohr_enc4x(enc4x)], dim=1))
        lr4x = _up(lr8x)
        hr4x = self.conv_hr4x(torch.cat([hr4x, lr4x, image4x], dim=1))
        hr2x = self.conv_hr2x(torch.cat([_up(hr4x), enc2x_hr], dim=1))
        boundary_logit = self.conv_hr(torch.cat([_up(hr2x), x], dim=1))
        # fusion branch
        f2x = _up(self.conv_lr4x(lr4x))
        f = self.conv_f2x(torch.cat([f2x, hr2x], dim=1))
        alpha = torch.sigmoid(self.conv_f(torch.cat([_up(f), x], dim=1)))
        return alpha, boundary_logit
