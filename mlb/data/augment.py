"""Paired augmentation presets on torchvision.transforms.v2 (method.md section 1).

A preset is a callable over a sample dict: ``"image"`` ``(3, H, W) float`` in [0, 1] (plain
tensor or ``tv_tensors.Image``) plus any label maps wrapped as ``tv_tensors.Mask`` ``(C, H,
W)`` (``coarse_mask``, ``alpha``, ``blended_alpha``, ``trimap`` ...); other entries (ids) pass
through. Geometry is drawn once per call and applied to every tensor:

- weak: random scale (the short side to ``short_side * s``, ``s`` in ``scale_range``), a square
  crop of a size drawn from ``crop_sizes`` (multi-scale), resized to ``output_size``, and a
  horizontal flip;
- strong: weak, then colour jitter, grayscale, blur and noise on the image only (v2's
  photometric transforms pass masks through).

Evaluation resizes nothing here: it runs whole images through ``mlb.inference`` at
``InferenceConfig.short_side``.

Label interpolation: a floating-point mask is a soft label (alpha, blended alpha, boundary
probability) and is resized bilinearly like the image, keeping sub-pixel hair detail; an
integer or bool mask (a trimap stored as uint8, class ids) is resized with nearest neighbour.
Images smaller than the crop are zero-padded up to it (image black, labels 0 = background)
rather than rejected; only a zero-size image raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, model_validator
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from mlb.config import FrozenConfig

__all__ = [
    "AugmentConfig",
    "PairedPreset",
    "RandomScaleCrop",
    "ShortSideResize",
    "strong_preset",
    "weak_preset",
]


class AugmentConfig(FrozenConfig):
    """Augmentation settings shared by the presets (values are our choice, method.md s.1)."""

    short_side: int | None = Field(512, ge=1)
    """Before scaling, the short side is resized to this (None: scale the stored size)."""
    scale_range: tuple[float, float] = (1.0, 1.5)
    crop_sizes: tuple[int, ...] = (320, 416, 512)
    """Square crop sizes (px), one drawn per sample: the multi-scale crop. With the defaults
    a crop never exceeds the scaled short side, so padding is for small images only."""
    output_size: int | None = Field(512, ge=1)
    """Crops are resized to this square size so a batch stacks (None: keep the crop size)."""
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    brightness: float = Field(0.3, ge=0.0)
    contrast: float = Field(0.3, ge=0.0)
    saturation: float = Field(0.3, ge=0.0)
    hue: float = Field(0.05, ge=0.0, le=0.5)
    jitter_prob: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_prob: float = Field(0.05, ge=0.0, le=1.0)
    blur_prob: float = Field(0.2, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_prob: float = Field(0.2, ge=0.0, le=1.0)
    noise_sigma: float = Field(0.02, ge=0.0)

    @model_validator(mode="before")
    @classmethod
    def _drop_eval_short_side(cls, data: Any) -> Any:
        # Earlier releases declared an evaluation short side here that nothing read
        # (evaluation uses InferenceConfig.short_side); requests that still name it are kept.
        if isinstance(data, dict) and "eval_short_side" in data:
            return {key: value for key, value in data.items() if key != "eval_short_side"}
        return data

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentConfig:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if not self.crop_sizes or min(self.crop_sizes) < 1:
            raise ValueError(f"crop_sizes must be positive sizes, got {self.crop_sizes}")
        if self.short_side is not None and max(self.crop_sizes) > self.short_side * high:
            raise ValueError(f"crop sides {self.crop_sizes} exceed the largest scaled image "
                             f"side ({self.short_side * high:g} px: short side "
                             f"{self.short_side} x {high:g}): every crop would be mostly "
                             "padding")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")
        return self


def _interpolation(inpt: torch.Tensor) -> InterpolationMode:
    """Soft (floating) labels and images: bilinear; discrete (integer) labels: nearest."""
    if isinstance(inpt, tv_tensors.Mask) and not inpt.is_floating_point():
        return InterpolationMode.NEAREST
    return InterpolationMode.BILINEAR


def _resize(inpt: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Resize with the interpolation of :func:`_interpolation`, keeping the tv_tensor type."""
    if list(inpt.shape[-2:]) == list(size):
        return inpt
    mode = _interpolation(inpt)
    plain = inpt.as_subclass(torch.Tensor)
    # F.resize on a Mask forces nearest; resize the plain tensor to choose the mode.
    # Antialiased bilinear weights are non-negative: soft labels stay within their range.
    resized = F.resize_image(plain, size, interpolation=mode, antialias=True)
    return tv_tensors.wrap(resized, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else resized


def _short_side_size(height: int, width: int, short_side: int) -> list[int]:
    scale = short_side / min(height, width)
    return [max(1, round(height * scale)), max(1, round(width * scale))]


class RandomScaleCrop(v2.Transform):
    """Random scale, multi-scale square crop (zero padding if too small), resize to output."""

    def __init__(self, config: AugmentConfig) -> None:
        super().__init__()
        self.config = config

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        if height == 0 or width == 0:
            raise ValueError(f"cannot augment a zero-size image ({height}x{width})")
        low, high = self.config.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        base = (self.config.short_side if self.config.short_side is not None
                else min(height, width))
        size = _short_side_size(height, width, max(1, round(base * scale)))
        crop = self.config.crop_sizes[int(torch.randint(len(self.config.crop_sizes), ()))]
        pad_h, pad_w = max(0, crop - size[0]), max(0, crop - size[1])
        top = int(torch.randint(size[0] + pad_h - crop + 1, ()))
        left = int(torch.randint(size[1] + pad_w - crop + 1, ()))
        output = self.config.output_size or crop
        # Padding is split evenly so a small image sits in the middle of its crop.
        padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        return {"size": size, "padding": padding, "top": top, "left": left, "crop": crop,
                "output": [output, output]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = _resize(inpt, params["size"])
        if any(params["padding"]):
            out = F.pad(out, params["padding"], fill=0)
        out = F.crop(out, params["top"], params["left"], params["crop"], params["crop"])
        return _resize(out, params["output"])


class ShortSideResize(v2.Transform):
    """Resize so the short side is ``short_side`` (aspect ratio kept)."""

    def __init__(self, short_side: int) -> None:
        super().__init__()
        self.short_side = short_side

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        if height == 0 or width == 0:
            raise ValueError(f"cannot resize a zero-size image ({height}x{width})")
        return {"size": _short_side_size(height, width, self.short_side)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, params["size"])


class PairedPreset:
    """A v2 pipeline over a sample dict; checks the image and labels share one size."""

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if "image" not in sample:
            raise KeyError(f"sample has no 'image' key (keys: {sorted(sample)})")
        image = sample["image"]
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
        for key, value in sample.items():
            if isinstance(value, torch.Tensor) and key != "image":
                if not isinstance(value, tv_tensors.Mask):
                    raise TypeError(f"label '{key}' must be a tv_tensors.Mask, got {type(value)}")
                if value.shape[-2:] != image.shape[-2:]:
                    raise ValueError(f"label '{key}' is {tuple(value.shape[-2:])}, image is "
                                     f"{tuple(image.shape[-2:])}: labels must match the image")
        sample = {**sample, "image": tv_tensors.Image(image)}
        return self.transform(sample)

    def __repr__(self) -> str:
        return f"PairedPreset({self.transform!r})"


def _weak_steps(config: AugmentConfig) -> list[v2.Transform]:
    return [RandomScaleCrop(config), v2.RandomHorizontalFlip(p=config.flip_prob)]


def _photometric_steps(config: AugmentConfig) -> list[v2.Transform]:
    """Image-only ops; v2 passes every Mask through them untouched."""
    jitter = v2.ColorJitter(brightness=config.brightness, contrast=config.contrast,
                            saturation=config.saturation, hue=config.hue)
    return [
        v2.RandomApply([jitter], p=config.jitter_prob),
        v2.RandomGrayscale(p=config.grayscale_prob),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=config.blur_sigma)],
                       p=config.blur_prob),
        v2.RandomApply([v2.GaussianNoise(sigma=config.noise_sigma, clip=True)],
                       p=config.noise_prob),
    ]


def weak_preset(config: AugmentConfig | None = None) -> PairedPreset:
    """Random scale, multi-scale crop, flip: identical on the image and every label."""
    return PairedPreset(v2.Compose(_weak_steps(config or AugmentConfig())))


def strong_preset(config: AugmentConfig | None = None) -> PairedPreset:
    """The weak geometry, then colour jitter, grayscale, blur and noise on the image only."""
    config = config or AugmentConfig()
    return PairedPreset(v2.Compose(_weak_steps(config) + _photometric_steps(config)))
