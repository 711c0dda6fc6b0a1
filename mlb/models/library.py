"""U-Net students over encoders from ``timm`` (``features_only=True``).

Why ``timm``: it is the maintained source of ImageNet encoders for PyTorch (MobileNetV3,
EfficientNet, ConvNeXt, ResNet ... behind one ``create_model(..., features_only=True)`` call
that reports each stage's channels and stride), its weights come through the Hugging Face cache
(which honours ``HF_HUB_OFFLINE``), and segmentation_models.pytorch itself builds on it, so
using ``timm`` directly adds the encoders without a second decoder zoo.

```
image -> pad to /32 -> normalise -> timm encoder: stages at /2, /4, /8, /16, /32
/32 -> up, [., /16] -> up, [., /8] -> up, [., /4] -> up, [., /2] -> up, [., image skip]
    -> alpha head (sigmoid), boundary head (logit)
```
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from mlb.models.interface import StridedMattingNet
from mlb.models.pretrained import load_matching_weights, offline
from mlb.models.unet import DecoderBlock, _conv_bn_relu

# Registered name -> timm model name. Decoder widths from /16 to full resolution.
LIBRARY_ENCODERS = {
    "unet_mobilenetv3": "mobilenetv3_large_100",
}
DECODER_CHANNELS = (96, 48, 32, 24, 16)
IMAGE_SKIP_CHANNELS = 8


def _timm_encoder(timm_name: str, *, pretrained: bool) -> nn.Module:
    import timm  # imported here: the U-Nets and MODNet do not need it

    return timm.create_model(timm_name, features_only=True, pretrained=pretrained,
                             out_indices=(0, 1, 2, 3, 4))


class LibraryUNet(StridedMattingNet):
    """U-Net decoder over a ``timm`` encoder with strides 2, 4, 8, 16, 32."""

    stride = 32

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        reductions = tuple(encoder.feature_info.reduction())
        if reductions != (2, 4, 8, 16, 32):
            raise ValueError(f"encoder stage strides must be (2, 4, 8, 16, 32), got {reductions}")
        channels = encoder.feature_info.channels()
        self.encoder = encoder
        blocks, previous = [], channels[4]
        for skip, out in zip(reversed(channels[:4]), DECODER_CHANNELS[:4], strict=True):
            blocks.append(DecoderBlock(previous, skip, out))
            previous = out
        self.decoders = nn.ModuleList(blocks)
        self.image_skip = _conv_bn_relu(3, IMAGE_SKIP_CHANNELS)
        self.decode1 = DecoderBlock(previous, IMAGE_SKIP_CHANNELS, DECODER_CHANNELS[4])
        self.alpha_head = nn.Conv2d(DECODER_CHANNELS[4], 1, 3, padding=1)
        self.boundary_head = nn.Conv2d(DECODER_CHANNELS[4], 1, 3, padding=1)

    def forward_padded(self, x: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        *skips, y = self.encoder(x)
        for block, skip in zip(self.decoders, reversed(skips), strict=True):
            y = block(y, skip)
        y = self.decode1(y, self.image_skip(x))
        return torch.sigmoid(self.alpha_head(y)), self.boundary_head(y)


@contextlib.contextmanager
def _hub_offline(on: bool) -> Iterator[None]:
    """Hugging Face Hub offline mode while timm looks for weights. The hub reads
    ``HF_HUB_OFFLINE`` once, when it is imported; ``MLB_OFFLINE`` (or the variable set after
    that import) would otherwise leave it retrying a network that is not there for a minute."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or on
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def build_library_unet(name: str, pretrained_encoder: str | None) -> LibraryUNet:
    """``pretrained_encoder``: None (random), ``"imagenet"`` (timm's weights through the Hugging
    Face cache; offline, only a cached copy) or a local file holding the timm model's
    ``state_dict`` (classifier keys are ignored)."""
    timm_name = LIBRARY_ENCODERS[name]
    if pretrained_encoder == "imagenet":
        try:
            with _hub_offline(offline()):
                encoder = _timm_encoder(timm_name, pretrained=True)
        except (OSError, RuntimeError, ValueError) as error:
            note = " (offline: HF_HUB_OFFLINE or MLB_OFFLINE is set)" if offline() else ""
            raise ValueError(
                f"cannot load timm's ImageNet weights for {timm_name}{note}: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}; "
                f"pass a local state_dict file instead (--pretrained-encoder PATH)"
            ) from error
        return LibraryUNet(encoder)
    encoder = _timm_encoder(timm_name, pretrained=False)
    if pretrained_encoder is not None:
        load_matching_weights(encoder, Path(pretrained_encoder), what=f"timm {timm_name}")
    return LibraryUNet(encoder)
