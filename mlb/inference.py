"""Inference: images of any size -> alpha and boundary at each image's own size.

The one library function that relabel, evaluate, predict and the benchmarks call is
:func:`predict_images`. Following method.md section 3 ("inference resizes the short side to
512, predicts, resizes back"), each image is resized so its short side is ``short_side``
(aspect kept; ``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging), the
batch is padded to its largest height and width by replicating the last row and column, the
network runs once, and every prediction is cropped back and resized (bilinear) to its image's
original size.

Its three stages are public so that ``mlb.labels.relabel`` can run them on different threads:

    batch = prepare_batch(images, short_side=512)       # CPU: resize + pad (cv2 frees the GIL)
                                                        # (or resize_short_side + pad_batch)
    alpha, boundary = run_model(model, batch)          # device: (B, 1, h, w) float32
    pairs = to_original_size(batch, alpha, boundary)   # device: [(1, 1, H, W), ...]

Numerics. On CUDA the network runs under autocast (bfloat16 where supported, else float16)
with channels_last tensors; on the CPU it runs in float32. Outputs always come back float32.
A prediction depends on its whole batch: the ASPP image-pooling branch averages over the
padded canvas, so the same image padded to another size gives slightly different values.
Callers that need reproducible bytes (relabel) must therefore form the same batches every
time; CPU results are then bit-identical run to run for the same torch build and thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import PositiveInt, field_validator
from torch import Tensor, nn

from mlb.config import FrozenConfig, ShortSide
from mlb.device import check_device_name, resolve_device

DEFAULT_SHORT_SIDE = 512  # method.md section 1: "test images resized to short side 512"
DEFAULT_BATCH_SIZE = 8  # predict_images' own default (the relabel pipeline's batch)


class InferenceConfig(FrozenConfig):
    """How a trained network is run on images: the one inference setting that every request
    running a network composes (``RelabelConfig.inference``, ``EvaluateRequest.inference``,
    ``EmaRoundRequest.inference``, ``mlb predict``), so a default changes in one place."""

    short_side: ShortSide = DEFAULT_SHORT_SIDE
    batch_size: PositiveInt = 4
    """Images per forward pass."""
    amp: bool = True
    """Autocast on CUDA (bfloat16 where supported, else float16); ignored on the CPU."""
    device: str = "auto"
    """``"auto"`` (CUDA if available, else CPU) or any torch device string."""
    channels_last: bool = True
    """NHWC memory format on CUDA (faster convolutions with tensor cores); ignored on CPU."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return check_device_name(device)

    def predict(self, model: nn.Module, images: Sequence[np.ndarray]) -> list[Prediction]:
        """:func:`predict_images` with these settings (the model already on its device)."""
        return predict_images(model, images, short_side=self.short_side, amp=self.amp,
                              batch_size=self.batch_size, channels_last=self.channels_last)


INFERENCE_FIELDS = frozenset(InferenceConfig.model_fields)


def nest_inference_fields(data: Any) -> Any:
    """Requests written for earlier releases (JSON flow parameters, scripts) name the inference
    settings flat (``{"short_side": 256}``); they now live under ``inference``. Moves them
    there; the same setting given both ways with two values is an error naming both."""
    if not isinstance(data, dict):
        return data
    flat = {key: data[key] for key in INFERENCE_FIELDS & data.keys()}
    if not flat:
        return data
    nested = data.get("inference") or {}
    if isinstance(nested, InferenceConfig):
        nested = nested.model_dump(exclude_unset=True)
    clashes = {key for key in flat.keys() & nested.keys() if flat[key] != nested[key]}
    if clashes:
        key = sorted(clashes)[0]
        raise ValueError(f"{key} is given twice, as {flat[key]!r} and as "
                         f"inference.{key}={nested[key]!r}; give it once, under inference")
    rest = {key: value for key, value in data.items() if key not in flat}
    return {**rest, "inference": {**nested, **flat}}


@dataclass(frozen=True)
class Prediction:
    """One image's outputs at its original size: both ``(H, W) float32`` in [0, 1].

    ``boundary`` is the boundary probability, ``sigmoid(boundary_logit)``.
    """

    alpha: np.ndarray
    boundary: np.ndarray


@dataclass(frozen=True)
class InferenceBatch:
    """Resized images padded into one tensor, and the sizes needed to undo it.

    ``pixels``: ``(B, 3, h_max, w_max) uint8`` on the CPU, channels-last strides (it is a view
    of an NHWC array; uint8 keeps the host-to-device copy four times smaller than float32).
    ``sizes``: each image's resized ``(h, w)``; ``original_sizes``: its ``(H, W)``.
    """

    pixels: Tensor
    sizes: tuple[tuple[int, int], ...]
    original_sizes: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.sizes)


def resized_size(height: int, width: int, *, short_side: int) -> tuple[int, int]:
    """``(h, w)`` with ``min(h, w) == short_side`` and the aspect ratio kept (rounded)."""
    scale = short_side / min(height, width)
    if height <= width:
        return short_side, max(1, round(width * scale))
    return max(1, round(height * scale)), short_side


def resize_short_side(image: np.ndarray, *, short_side: int) -> np.ndarray:
    """Resize ``(H, W, C) uint8`` so its short side is ``short_side`` (area down, linear up)."""
    height, width = image.shape[:2]
    target = resized_size(height, width, short_side=short_side)
    if target == (height, width):
        return image
    # INTER_AREA averages every source pixel when shrinking (no aliasing of hair detail);
    # it degenerates to nearest-like output when enlarging, where INTER_LINEAR is right.
    shrinking = target[0] < height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (target[1], target[0]), interpolation=interpolation)


def prepare_batch(images: Sequence[np.ndarray], *, short_side: int = DEFAULT_SHORT_SIDE
                  ) -> InferenceBatch:
    """Resize each ``(H, W, 3) uint8`` RGB image to ``short_side`` and pad them into a batch."""
    if not images:
        raise ValueError("prepare_batch needs at least one image, got an empty sequence")
    for position, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {position} of the batch must be (H, W, 3) uint8 RGB, got "
                             f"{image.dtype} array of shape {image.shape}")
    resized = [resize_short_side(image, short_side=short_side) for image in images]
    return pad_batch(resized, original_sizes=[image.shape[:2] for image in images])


def pad_batch(resized: Sequence[np.ndarray], *,
              original_sizes: Sequence[tuple[int, int]]) -> InferenceBatch:
    """Pad already resized ``(h, w, 3) uint8`` images to the batch's largest h and w.

    Padding replicates the last row and column (as the network's own stride padding does),
    so the image edge is not framed by a black border the network would read as background.
    ``original_sizes``: the ``(H, W)`` each prediction is resized back to.
    """
    if len(resized) != len(original_sizes) or not resized:
        raise ValueError(f"pad_batch needs one original size per image and at least one image, "
                         f"got {len(resized)} images and {len(original_sizes)} sizes")
    height = max(image.shape[0] for image in resized)
    width = max(image.shape[1] for image in resized)
    canvas = np.stack([
        cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, width - image.shape[1],
                           cv2.BORDER_REPLICATE)
        for image in resized
    ])
    return InferenceBatch(
        pixels=torch.from_numpy(canvas).permute(0, 3, 1, 2),
        sizes=tuple(tuple(image.shape[:2]) for image in resized),
        original_sizes=tuple(tuple(size) for size in original_sizes),
    )


def prepare_model(model: nn.Module, *, device: str | torch.device | None = "auto",
                  channels_last: bool = True) -> nn.Module:
    """Move ``model`` to ``device`` in eval mode (channels_last on CUDA); returns it."""
    device = resolve_device(device)
    model = model.to(device).eval()
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def autocast_dtype(device: torch.device, *, amp: bool) -> torch.dtype | None:
    """The autocast dtype used on ``device``, None for float32 (CPU, or ``amp=False``)."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def run_model(model: nn.Module, batch: InferenceBatch, *, amp: bool = True,
              channels_last: bool = True) -> tuple[Tensor, Tensor]:
    """Run ``model`` (on its own device, eval mode, no grad) over a prepared batch.

    Returns ``(alpha, boundary)``, both ``(B, 1, h_max, w_max) float32`` in [0, 1] on the
    model's device; ``boundary = sigmoid(boundary_logit)``.
    """
    device = _model_device(model)
    pixels = batch.pixels.to(device, non_blocking=True)
    memory_format = (torch.channels_last if channels_last and device.type == "cuda"
                     else torch.contiguous_format)
    image = pixels.to(torch.float32).div_(255.0).contiguous(memory_format=memory_format)
    dtype = autocast_dtype(device, amp=amp)
    # no_grad rather than inference_mode: callers may modify the outputs in place.
    with torch.no_grad():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = model(image)
        alpha = output.alpha.float().clamp_(0.0, 1.0)
        boundary = torch.sigmoid(output.boundary_logit.float())
    return alpha, boundary


def resize_plane(values: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``(B, C, h, w)`` float to ``size = (H, W)`` (antialiased shrink)."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    shrinking = size[0] < values.shape[-2] or size[1] < values.shape[-1]
    with torch.no_grad():
        resized = F.interpolate(values, size=size, mode="bilinear", align_corners=False,
                                antialias=shrinking)
        return resized.clamp_(0.0, 1.0)


def to_original_size(batch: InferenceBatch, alpha: Tensor, boundary: Tensor
                     ) -> list[tuple[Tensor, Tensor]]:
    """Crop each prediction to its resized size and resize it back to its original size.

    ``alpha``, ``boundary``: ``(B, 1, h_max, w_max)`` from :func:`run_model` ->
    one ``(alpha, boundary)`` pair per image, each ``(1, 1, H, W) float32`` on their device.
    """
    pairs = []
    for index, ((height, width), original) in enumerate(
            zip(batch.sizes, batch.original_sizes, strict=True)):
        crop = torch.cat([alpha[index:index + 1, :, :height, :width],
                          boundary[index:index + 1, :, :height, :width]], dim=1)
        restored = resize_plane(crop, original)  # both planes in one interpolate call
        pairs.append((restored[:, :1], restored[:, 1:]))
    return pairs


def predict_images(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    short_side: int = DEFAULT_SHORT_SIDE,
    device: str | torch.device | None = None,
    amp: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    channels_last: bool = True,
) -> list[Prediction]:
    """Predict alpha and boundary for ``(H, W, 3) uint8`` RGB images of any sizes.

    ``device=None`` runs on the device ``model`` is already on; a device string (``"auto"``,
    ``"cuda"``, ``"cpu"``) first moves the model there (in place, as ``nn.Module.to`` does).
    Images are taken ``batch_size`` at a time, in the given order. Returns one
    :class:`Prediction` per image, at that image's size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        model = prepare_model(model, device=device, channels_last=channels_last)
    model.eval()
    predictions = []
    for start in range(0, len(images), batch_size):
        batch = prepare_batch(images[start:start + batch_size], short_side=short_side)
        alpha, boundary = run_model(model, batch, amp=amp, channels_last=channels_last)
        for image_alpha, image_boundary in to_original_size(batch, alpha, boundary):
            predictions.append(Prediction(alpha=image_alpha[0, 0].cpu().numpy(),
                                          boundary=image_boundary[0, 0].cpu().numpy()))
    return predictions
