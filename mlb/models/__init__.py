"""Matting networks by name: ``build_model("unet_r18", pretrained_encoder=PATH)``.

The networks of method.md section 1: a U-Net over a ResNet encoder (stem without max-pool)
with ASPP, a sigmoid ``alpha`` head and a ``boundary_logit`` head. ResNet-101 is the teacher
and default student, ResNet-18 and ResNet-18 at half width the real-time students.
"""

import os
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PositiveInt, field_validator
from torchvision.models.resnet import BasicBlock, Bottleneck

from mlb.config import FrozenConfig
from mlb.models.aspp import ASPP
from mlb.models.encoder import EncoderSpec, ResNetEncoder, load_encoder_weights
from mlb.models.unet import MattingNet, MattingOutput

__all__ = [
    "ASPP",
    "MODELS",
    "EncoderSpec",
    "MattingNet",
    "MattingOutput",
    "ModelConfig",
    "ModelOptions",
    "ResNetEncoder",
    "available_models",
    "build_model",
    "build_model_from_config",
    "load_encoder_weights",
]

# The registry: name -> encoder; the decoder is scaled by the encoder's width.
MODELS: dict[str, EncoderSpec] = {
    "unet_r101": EncoderSpec(Bottleneck, (3, 4, 23, 3)),
    "unet_r50": EncoderSpec(Bottleneck, (3, 4, 6, 3)),
    "unet_r18": EncoderSpec(BasicBlock, (2, 2, 2, 2)),
    "unet_r18_w05": EncoderSpec(BasicBlock, (2, 2, 2, 2), width=0.5),
}


def available_models() -> list[str]:
    """Registered network names, in registry order."""
    return list(MODELS)


def _check_name(name: str) -> str:
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; available options are {', '.join(available_models())}"
        )
    return name


def _path_to_str(value: object) -> object:
    # Stored as str, not Path: checkpoints keep ModelConfig.model_dump() and are read back
    # with torch.load(weights_only=True), which refuses pathlib objects.
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class ModelOptions(FrozenConfig):
    """Keyword options of :func:`build_model`, shared by every registered network."""

    pretrained_encoder: Annotated[str | None, BeforeValidator(_path_to_str)] = None
    """Local torchvision ResNet state_dict file (torch.save); never downloaded."""
    aspp_rates: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (1, 6, 12, 18)
    """ASPP dilation rates (rate 1 is the 1x1 branch), as in DeepLabv3."""


class ModelConfig(FrozenConfig):
    """Which network to build; checkpoints store ``model_dump()`` of this."""

    name: str
    options: ModelOptions = ModelOptions()

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return _check_name(name)


def build_model(name: str, **options: Any) -> MattingNet:
    """Build a registered network; ``options`` are the fields of :class:`ModelOptions`.

    Raises ``ValueError`` for an unknown name (listing the available ones) or option, and
    ``FileNotFoundError`` / ``ValueError`` for a missing / mismatched ``pretrained_encoder``.
    """
    spec = MODELS[_check_name(name)]
    settings = ModelOptions(**options)  # pydantic's ValidationError is a ValueError
    encoder = ResNetEncoder(spec)
    if settings.pretrained_encoder is not None:
        load_encoder_weights(encoder, settings.pretrained_encoder)
    return MattingNet(encoder, decoder_width=spec.width, aspp_rates=settings.aspp_rates)


def build_model_from_config(config: ModelConfig, *, load_pretrained: bool = True) -> MattingNet:
    """Build ``config``'s network; ``load_pretrained=False`` skips the encoder file (use it
    when a checkpoint's full state_dict is loaded next and the file may no longer exist)."""
    options = config.options.model_dump()
    if not load_pretrained:
        options["pretrained_encoder"] = None
    return build_model(config.name, **options)
