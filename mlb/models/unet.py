"""The matting network: ResNet encoder, ASPP, U-Net decoder, alpha and boundary heads.

```
image (B,3,H,W) in [0,1] -> pad to /16 -> ImageNet normalise ---------------------+
  encoder: layer1 (/2) ---------------------------------------------+             |
           layer2 (/4) ---------------------------+                 |        image_skip
           layer3 (/8) ------------+              |                 |             |
           layer4 (/16) -> ASPP -> decode8 -> decode4 -> decode2 -> decode1 (/1) -+
                                                                       |-> alpha_head -> sigmoid
                                                                       |-> boundary_head (logit)
-> crop back to (H, W)
```
Two heads as method.md section 1 describes the teacher: a matte (sigmoid) and a boundary
map (logit, trained with BCE against ``1[0.05 < alpha < 0.95]``).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlb.models.aspp import ASPP
from mlb.models.encoder import ResNetEncoder
from mlb.models.interface import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MattingOutput,
    StridedMattingNet,
    pad_to_stride,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MattingNet", "MattingOutput", "pad_to_stride"]

# Decoder widths at full width, from the bottleneck (/16) to full resolution; the half-width
# student scales them with its encoder (method.md section 1, real-time students).
ASPP_CHANNELS = 256
DECODER_CHANNELS = (256, 128, 64, 32)
IMAGE_SKIP_CHANNELS = 16


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip, two 3x3 conv-BN-ReLU.

    ``x (B, in_channels, h, w)`` and ``skip (B, skip_channels, 2h, 2w)`` ->
    ``(B, out_channels, 2h, 2w)``; exact because the input is padded to the network stride.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fuse = _conv_bn_relu(in_channels + skip_channels, out_channels)
        self.refine = _conv_bn_relu(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.refine(self.fuse(torch.cat([x, skip], dim=1)))


class MattingNet(StridedMattingNet):
    """U-Net over a ResNet encoder with ASPP at the bottleneck and two heads.

    ``forward(image)``: ``(B, 3, H, W)`` float in [0, 1], any H, W >= 1 (in training mode
    BatchNorm needs more than one value per channel at the bottleneck: B * ceil(H/16) *
    ceil(W/16) > 1) -> :class:`MattingOutput`, both ``(B, 1, H, W)``.
    """

    stride = ResNetEncoder.stride

    def __init__(
        self,
        encoder: ResNetEncoder,
        *,
        decoder_width: float = 1.0,
        aspp_rates: tuple[int, ...] = (1, 6, 12, 18),
    ) -> None:
        super().__init__()
        aspp_channels, *decoder, image_channels = (
            max(1, round(channels * decoder_width))
            for channels in (ASPP_CHANNELS, *DECODER_CHANNELS, IMAGE_SKIP_CHANNELS)
        )
        layer1, layer2, layer3, layer4 = encoder.out_channels
        self.encoder = encoder
        self.aspp = ASPP(layer4, aspp_channels, rates=aspp_rates)
        self.decode8 = DecoderBlock(aspp_channels, layer3, decoder[0])
        self.decode4 = DecoderBlock(decoder[0], layer2, decoder[1])
        self.decode2 = DecoderBlock(decoder[1], layer1, decoder[2])
        self.image_skip = _conv_bn_relu(3, image_channels)
        self.decode1 = DecoderBlock(decoder[2], image_channels, decoder[3])
        self.alpha_head = nn.Conv2d(decoder[3], 1, 3, padding=1)
        self.boundary_head = nn.Conv2d(decoder[3], 1, 3, padding=1)

    def forward_padded(self, x: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        # padding, normalisation and the crop back: StridedMattingNet.forward
        layer1, layer2, layer3, layer4 = self.encoder(x)
        y = self.aspp(layer4)
        y = self.decode8(y, layer3)
        y = self.decode4(y, layer2)
        y = self.decode2(y, layer1)
        y = self.decode1(y, self.image_skip(x))
        return torch.sigmoid(self.alpha_head(y)), self.boundary_head(y)
