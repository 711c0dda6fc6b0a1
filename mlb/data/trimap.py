"""Trimaps from coarse masks: erode foreground and background with elliptical kernels.

method.md section 2: DDC's trimaps were made by eroding the foreground and the background of
the alpha with random elliptical kernels of 1-29 px; here they come from coarse masks the same
way (eroding the background is dilating the foreground). Values: 0 background, 0.5 unknown,
1 foreground, ``(H, W) float32``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DEFAULT_KERNEL_RANGE", "REFERENCE_SIDE", "erode_trimap", "kernel_range_for",
           "trimap_from_mask"]

# method.md section 2: "random elliptical kernels of 1-29 px" (both ends included).
DEFAULT_KERNEL_RANGE = (1, 29)
# The reference code resizes every alpha to 640 x 640 before eroding it, then resizes the
# trimap back: its kernels are 1/640 to 29/640 of the image side, whatever the image's size.
REFERENCE_SIDE = 640
# Smallest kernel for trimaps from coarse masks. The reference erodes the true alpha, whose
# known regions are right by construction; a hand-drawn mask is off by a pixel or two along
# its edge, and a 1 px kernel keeps that error as "known". On the built-in benchmark at 96 px
# 1.7% of the known pixels of 1 px trimaps were wrong (|alpha - trimap| > 0.5), 0.37% at 3 px,
# 0.07% at 5 px (docs/science-notes.md).
MASK_MIN_KERNEL = 3


def kernel_range_for(side: int, *, minimum: int = MASK_MIN_KERNEL) -> tuple[int, int]:
    """The reference's 1-29 px kernels at 640 px, scaled to images of ``side`` px.

    At 96 px the reference range is 1-4 px (a 29 px kernel would erode 14 px, a sixth of the
    image); the lower end is raised to ``minimum`` (trimaps from coarse masks). E.g. 96 ->
    (3, 4), 256 -> (3, 12), 512 -> (3, 23), 640 -> (3, 29).
    """
    if side < 1 or minimum < 1:
        raise ValueError(f"side and minimum must be >= 1, got {side} and {minimum}")
    low, high = DEFAULT_KERNEL_RANGE
    scaled_low = max(minimum, round(low * side / REFERENCE_SIDE))
    return scaled_low, max(scaled_low, round(high * side / REFERENCE_SIDE))


def _erode(region: np.ndarray, kernel_size: int) -> np.ndarray:
    if kernel_size <= 1:
        return region
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    # cv2 pads erosion with the maximum: the image frame is not treated as an object edge.
    return cv2.erode(region, kernel)


def erode_trimap(coarse_mask: np.ndarray, *, foreground_kernel: int,
                 background_kernel: int) -> np.ndarray:
    """Trimap from a mask with fixed kernel sizes (px, odd or even, >= 1).

    ``coarse_mask``: ``(H, W)`` float in [0, 1], binarised at 0.5. Returns ``(H, W) float32``
    in {0, 0.5, 1}: 1 where the eroded foreground is, 0 where the eroded background is.
    """
    if coarse_mask.ndim != 2:
        raise ValueError(f"coarse_mask must be (H, W), got shape {coarse_mask.shape}")
    if foreground_kernel < 1 or background_kernel < 1:
        raise ValueError(
            f"kernel sizes must be >= 1, got {foreground_kernel} and {background_kernel}")
    foreground = (np.asarray(coarse_mask) >= 0.5).astype(np.uint8)
    sure_foreground = _erode(foreground, foreground_kernel).astype(bool)
    sure_background = _erode(1 - foreground, background_kernel).astype(bool)
    trimap = np.full(foreground.shape, 0.5, dtype=np.float32)
    trimap[sure_foreground] = 1.0
    trimap[sure_background] = 0.0
    return trimap


def trimap_from_mask(coarse_mask: np.ndarray, *, rng: np.random.Generator,
                     kernel_range: tuple[int, int] = DEFAULT_KERNEL_RANGE) -> np.ndarray:
    """Trimap with independent random kernel sizes in ``kernel_range`` (inclusive).

    ``coarse_mask``: ``(H, W)`` float in [0, 1]. Returns ``(H, W) float32`` in {0, 0.5, 1}.
    """
    low, high = kernel_range
    if not 1 <= low <= high:
        raise ValueError(f"kernel_range must satisfy 1 <= low <= high, got {kernel_range}")
    foreground_kernel, background_kernel = (int(k) for k in rng.integers(low, high + 1, size=2))
    return erode_trimap(coarse_mask, foreground_kernel=foreground_kernel,
                        background_kernel=background_kernel)
