"""Matting networks by name: ``build_model("unet_r18", pretrained_encoder=PATH)``.

The networks of method.md section 1: a U-Net over a ResNet encoder (stem without max-pool)
with ASPP, a sigmoid ``alpha`` head and a ``boundary_logit`` head. ResNet-101 is the teacher
and default student, ResNet-18 and ResNet-18 at half width the real-time students.
Besides them: ``modnet`` (:mod:`mlb.models.modnet`), U-Nets over ``timm`` encoders
(:mod:`mlb.models.library`) and plugins (:mod:`mlb.models.plugins`): an entry point of the
``mlb.models`` group or a ``module:factory`` spec. All meet :mod:`mlb.models.interface`.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PositiveInt, field_validator
from torch import nn
from torchvision.models import (
    MobileNet_V2_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
)
from torchvision.models.resnet import BasicBlock, Bottleneck

from mlb.config import FrozenConfig
from mlb.models.aspp import ASPP
from mlb.models.encoder import EncoderSpec, ResNetEncoder, load_encoder_weights
from mlb.models.interface import MattingOutput, StridedMattingNet
from mlb.models.library import LIBRARY_ENCODERS, build_library_unet
from mlb.models.modnet import MODNet
from mlb.models.plugins import build_plugin, check_plugin_name, plugin_names
from mlb.models.pretrained import IMAGENET, load_matching_weights, torchvision_imagenet
from mlb.models.unet import MattingNet

__all__ = [
    "ASPP",
    "MODELS",
    "NETWORKS",
    "EncoderSpec",
    "MattingNet",
    "MattingOutput",
    "ModelConfig",
    "ModelOptions",
    "ResNetEncoder",
    "StridedMattingNet",
    "available_models",
    "build_model",
    "build_model_from_config",
    "load_encoder_weights",
]

# The ResNet U-Nets: name -> encoder; the decoder is scaled by the encoder's width.
MODELS: dict[str, EncoderSpec] = {
    "unet_r101": EncoderSpec(Bottleneck, (3, 4, 23, 3)),
    "unet_r50": EncoderSpec(Bottleneck, (3, 4, 6, 3)),
    "unet_r18": EncoderSpec(BasicBlock, (2, 2, 2, 2)),
    "unet_r18_w05": EncoderSpec(BasicBlock, (2, 2, 2, 2), width=0.5),
}


# torchvision ImageNet weights of the full-width U-Nets' encoders ("imagenet").
_RESNET_IMAGENET = {
    "unet_r101": ResNet101_Weights.IMAGENET1K_V1,
    "unet_r50": ResNet50_Weights.IMAGENET1K_V1,
    "unet_r18": ResNet18_Weights.IMAGENET1K_V1,
}


def available_models() -> list[str]:
    """Built-in network names in registry order, then installed ``mlb.models`` plugins."""
    return [*NETWORKS, *(name for name in plugin_names() if name not in NETWORKS)]


def _check_name(name: str) -> str:
    if name in NETWORKS:
        return name
    return check_plugin_name(name, available=list(NETWORKS))


def _path_to_str(value: object) -> object:
    # Stored as str, not Path: checkpoints keep ModelConfig.model_dump() and are read back
    # with torch.load(weights_only=True), which refuses pathlib objects.
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class ModelOptions(FrozenConfig):
    """Keyword options of :func:`build_model`, shared by every registered network."""

    pretrained_encoder: Annotated[str | None, BeforeValidator(_path_to_str)] = None
    """``"imagenet"`` (the library's weights through its own cache; offline, only a cached
    copy) or a local state_dict file of the encoder (torch.save)."""
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


def _unet(name: str, settings: ModelOptions) -> nn.Module:
    spec = MODELS[name]
    encoder = ResNetEncoder(spec)
    if settings.pretrained_encoder == IMAGENET:
        if name not in _RESNET_IMAGENET:
            raise ValueError(f"{name} has no ImageNet encoder (its width is {spec.width}); "
                             f"pass a local state_dict file that fits it")
        state = torchvision_imagenet(_RESNET_IMAGENET[name])
        encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    elif settings.pretrained_encoder is not None:
        load_encoder_weights(encoder, settings.pretrained_encoder)
    return MattingNet(encoder, decoder_width=spec.width, aspp_rates=settings.aspp_rates)


def _modnet(name: str, settings: ModelOptions) -> nn.Module:
    model = MODNet()
    if settings.pretrained_encoder == IMAGENET:
        state = torchvision_imagenet(MobileNet_V2_Weights.IMAGENET1K_V1)
        model.encoder.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
    elif settings.pretrained_encoder is not None:
        # a torchvision mobilenet_v2 state_dict; its classifier is ignored
        load_matching_weights(model.encoder, Path(settings.pretrained_encoder),
                              what="MobileNetV2")
    return model


def _library(name: str, settings: ModelOptions) -> nn.Module:
    return build_library_unet(name, settings.pretrained_encoder)


# The registry: name -> builder(name, options). The U-Nets' decoder scales with the encoder.
NETWORKS: dict[str, Callable[[str, ModelOptions], nn.Module]] = {
    **dict.fromkeys(MODELS, _unet),
    "modnet": _modnet,
    **dict.fromkeys(LIBRARY_ENCODERS, _library),
}


def build_model(name: str, **options: Any) -> nn.Module:
    """Build a registered network or plugin; ``options`` are the fields of :class:`ModelOptions`.

    Raises ``ValueError`` for an unknown name (listing the available ones) or option, and
    ``FileNotFoundError`` / ``ValueError`` for a missing / mismatched ``pretrained_encoder``.
    """
    name = _check_name(name)
    settings = ModelOptions(**options)  # pydantic's ValidationError is a ValueError
    if name in NETWORKS:
        return NETWORKS[name](name, settings)
    return build_plugin(name, pretrained_encoder=settings.pretrained_encoder)


def build_model_from_config(config: ModelConfig, *, load_pretrained: bool = True) -> nn.Module:
    """Build ``config``'s network; ``load_pretrained=False`` skips the encoder file (use it
    when a checkpoint's full state_dict is loaded next and the file may no longer exist)."""
    options = config.options.model_dump()
    if not load_pretrained:
        options["pretrained_encoder"] = None
    return build_model(config.name, **options)
