"""Matte Label Blending: the teacher's boundary detail over the coarse mask (method.md section 1).

``blended_alpha = b * teacher_alpha + (1 - b) * coarse_mask`` where ``b`` is the teacher's
boundary probability (soft blend, our default), its 0.5 threshold (hard blend), optionally
zeroed outside a band around the mask edge. ``blend_labels`` runs on whole batches on any
device; ``blend_labels_numpy`` is the same math one image at a time (the benchmark baseline).
The label store keeps uint8, hence ``quantize_unit`` / ``dequantize_unit``.
"""

import math
from numbers import Integral
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from mlb.config import FrozenConfig

BlendMode = Literal["soft", "hard"]
_MODES = ("soft", "hard")
# Hard blend threshold on the boundary probability (method.md: b = 1[b > 0.5]).
_HARD_THRESHOLD = 0.5
# The coarse mask is binarised at 0.5 to find its edge for the band.
_MASK_THRESHOLD = 0.5


class BlendConfig(FrozenConfig):
    """How teacher and coarse mask are blended (method.md section 1, "our choice" switches)."""

    mode: BlendMode = "soft"
    band_px: int | None = Field(default=None, ge=1)


def quantize_unit(x: torch.Tensor) -> torch.Tensor:
    """``round(x * 255)`` as uint8, the label store's encoding (values clamped to [0, 1] first).

    Args:
        x: floating tensor in [0, 1], any shape.

    Returns:
        uint8 tensor of the same shape and device; ``dequantize_unit`` inverts it within 1/510.
    """
    if not x.is_floating_point():
        raise ValueError(f"quantize_unit expects a floating tensor, got dtype {x.dtype}")
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def dequantize_unit(u8: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [0, 1] (``u8 / 255``), same shape and device."""
    if u8.dtype != torch.uint8:
        raise ValueError(f"dequantize_unit expects a uint8 tensor, got dtype {u8.dtype}")
    return u8.to(torch.float32) / 255.0


# Resampling a label in float32 (augmentation, resizing) can land an ulp or two outside
# [0, 1]; such values are clamped, anything further out is an error.
UNIT_TOLERANCE = 1e-6


def _as_unit_float(name: str, x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 / 255; floating tensors are checked for [0, 1] and no NaN."""
    if x.dtype == torch.uint8:
        return dequantize_unit(x)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be uint8 (0..255) or floating in [0, 1], got {x.dtype}")
    # One fused pass: separate isnan / min / max passes made this check cost five times the
    # blend itself on a (16, 1, 512, 512) batch (docs/benchmarks.md, row 3). NaN propagates
    # into both extremes, so it is caught here too.
    low, high = (value.item() for value in torch.aminmax(x))
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"{name} contains NaN; expected values in [0, 1]")
    if low < -UNIT_TOLERANCE or high > 1.0 + UNIT_TOLERANCE:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.9g}, {high:.9g}]")
    if low < 0.0 or high > 1.0:  # float rounding of resampled labels: an ulp or two out
        return x.clamp(0.0, 1.0)
    return x


def _check_arguments(tensors: dict[str, torch.Tensor], mode: str, band_px: int | None) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if band_px is not None and (
        isinstance(band_px, bool) or not isinstance(band_px, Integral) or band_px < 1
    ):
        raise ValueError(f"band_px must be None or an int >= 1, got {band_px!r}")
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (B, 1, H, W) tensor, got {shape}")
    shapes = {name: tuple(x.shape) for name, x in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"teacher_alpha, teacher_boundary and coarse_mask differ: {shapes}")
    devices = {name: str(x.device) for name, x in tensors.items()}
    if len(set(devices.values())) != 1:
        raise ValueError(f"inputs are on different devices: {devices}")


def edge_band(coarse_mask: torch.Tensor, *, band_px: int) -> torch.Tensor:
    """Pixels within ``band_px`` of the mask edge (Chebyshev distance), as 0 / 1.

    A pixel is in the band when its ``(2 * band_px + 1)`` square neighbourhood holds both mask
    and background pixels, i.e. dilation and erosion of the mask (binarised at 0.5) differ there;
    max-pooling does both on the whole batch. The frame border is not an edge: pooling pads with
    -inf, so outside pixels never count as background or foreground.

    Args:
        coarse_mask: ``(B, 1, H, W)`` floating in [0, 1].
        band_px: band half-width in pixels, >= 1.

    Returns:
        ``(B, 1, H, W)`` in ``coarse_mask``'s dtype and device, values 0 or 1.
    """
    binary = (coarse_mask > _MASK_THRESHOLD).to(coarse_mask.dtype)
    dilated = _square_max(binary, band_px)
    eroded = -_square_max(-binary, band_px)
    return (dilated > eroded).to(coarse_mask.dtype)


def _square_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over the ``(2r+1)`` square around each pixel, as a row pass then a column pass:
    the same result as one square ``max_pool2d``, which on the CPU cost ~(2r+1) times more
    (7 s for a (16, 1, 512, 512) batch at r = 10, against 50 ms for per-image OpenCV)."""
    size = 2 * radius + 1
    rows = F.max_pool2d(x, (1, size), stride=1, padding=(0, radius))
    return F.max_pool2d(rows, (size, 1), stride=1, padding=(radius, 0))


def blend_labels(
    teacher_alpha: torch.Tensor,
    teacher_boundary: torch.Tensor,
    coarse_mask: torch.Tensor,
    *,
    mode: BlendMode = "soft",
    band_px: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend a batch of teacher predictions with coarse masks (MLB, method.md section 1).

    ``b`` is ``teacher_boundary`` (soft) or ``1[teacher_boundary > 0.5]`` (hard), then, with
    ``band_px``, zeroed outside ``edge_band(coarse_mask, band_px=band_px)``. The result is
    ``b * teacher_alpha + (1 - b) * coarse_mask``: the teacher where it sees boundary, the mask
    elsewhere.

    Args:
        teacher_alpha: ``(B, 1, H, W)``, float in [0, 1] or uint8 0..255.
        teacher_boundary: same shape; the boundary PROBABILITY (sigmoid already applied).
        coarse_mask: same shape; the segmentation label (binary; soft values are blended as is).
        mode: ``"soft"`` or ``"hard"``.
        band_px: None (no band) or an int >= 1.

    Returns:
        ``(blended_alpha, blended_boundary)``, both ``(B, 1, H, W)`` in [0, 1] on the inputs'
        device. ``blended_boundary`` is the effective ``b`` actually used (after the hard
        threshold and the band), kept for diagnosis and for students that learn it
        (``StudentRequest.boundary_target = "blend"``). Dtype: the
        promoted dtype of the float inputs, uint8 inputs counting as float32.

    Raises:
        ValueError: naming the argument, for a bad mode or band_px, shapes that are not one
            common ``(B, 1, H, W)``, mixed devices, a non-float non-uint8 dtype, NaN, or float
            values outside [0, 1].
    """
    named = {
        "teacher_alpha": teacher_alpha,
        "teacher_boundary": teacher_boundary,
        "coarse_mask": coarse_mask,
    }
    _check_arguments(named, mode, band_px)
    teacher_alpha, teacher_boundary, coarse_mask = (
        _as_unit_float(name, x) for name, x in named.items()
    )
    dtype = torch.promote_types(
        torch.promote_types(teacher_alpha.dtype, teacher_boundary.dtype), coarse_mask.dtype
    )
    teacher_alpha, boundary, coarse_mask = (
        x.to(dtype) for x in (teacher_alpha, teacher_boundary, coarse_mask)
    )
    if mode == "hard":
        boundary = (boundary > _HARD_THRESHOLD).to(dtype)
    if band_px is not None:
        boundary = boundary * edge_band(coarse_mask, band_px=int(band_px))
    # lerp is b * teacher_alpha + (1 - b) * coarse_mask in one pass with one output tensor
    # (exact at b = 0 and b = 1); the three-temporary form was memory bound.
    blended = torch.lerp(coarse_mask, teacher_alpha, boundary)
    return blended, boundary


def blend_labels_with(
    config: BlendConfig,
    teacher_alpha: torch.Tensor,
    teacher_boundary: torch.Tensor,
    coarse_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``blend_labels`` with the options of a ``BlendConfig``."""
    return blend_labels(teacher_alpha, teacher_boundary, coarse_mask, **config.model_dump())


def _as_unit_float_numpy(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x


def blend_labels_numpy(
    teacher_alpha: np.ndarray,
    teacher_boundary: np.ndarray,
    coarse_mask: np.ndarray,
    *,
    mode: BlendMode = "soft",
    band_px: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The same blend, one image at a time in numpy + OpenCV (the benchmark's baseline).

    Args:
        teacher_alpha, teacher_boundary, coarse_mask: ``(B, 1, H, W)`` arrays, float in [0, 1]
            or uint8 0..255 (not range-checked here; ``blend_labels`` is the checked path).
        mode, band_px: as in ``blend_labels``.

    Returns:
        ``(blended_alpha, blended_boundary)``, ``(B, 1, H, W)``, float32 for uint8 inputs, else
        the promoted float dtype.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    shapes = {tuple(x.shape) for x in (teacher_alpha, teacher_boundary, coarse_mask)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"expected three arrays of one (B, 1, H, W) shape, got {shapes}")
    arrays = [_as_unit_float_numpy(x) for x in (teacher_alpha, teacher_boundary, coarse_mask)]
    dtype = np.result_type(*arrays)
    blended = np.empty(arrays[0].shape, dtype=dtype)
    boundaries = np.empty(arrays[0].shape, dtype=dtype)
    for index in range(arrays[0].shape[0]):
        alpha, boundary, mask = (x[index, 0].astype(dtype) for x in arrays)
        if mode == "hard":
            boundary = (boundary > _HARD_THRESHOLD).astype(dtype)
        if band_px is not None:
            boundary = boundary * _edge_band_numpy(mask, band_px).astype(dtype)
        blended[index, 0] = boundary * alpha + (1 - boundary) * mask
        boundaries[index, 0] = boundary
    return blended, boundaries


def _edge_band_numpy(mask: np.ndarray, band_px: int) -> np.ndarray:
    """``edge_band`` for one ``(H, W)`` mask with OpenCV morphology (same square kernel)."""
    binary = (mask > _MASK_THRESHOLD).astype(np.uint8)
    kernel = np.ones((2 * band_px + 1, 2 * band_px + 1), np.uint8)
    # OpenCV's default morphology border never wins a max / min: the frame is no edge.
    return cv2.dilate(binary, kernel) != cv2.erode(binary, kernel)
