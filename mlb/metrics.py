"""Matting metrics per image, with the scales fixed in method.md section 3.

``MSE = mean((pred - gt)^2) x 1e3``, ``SAD = sum|pred - gt| / 1000``, ``MAD = mean|pred - gt|
x 1e3``; Grad and Conn follow the Deep Image Matting evaluation code (Rhemann et al. 2009
definitions), / 1000. Whole region: every pixel; boundary region: ``0.05 < gt < 0.95``. Grad and
Conn are reported on the whole image only.
"""

import math
from collections.abc import Iterable, Mapping

import cv2
import numpy as np

# method.md section 3: boundary region = pixels with 0.05 < gt < 0.95.
_BOUNDARY_LOW = 0.05
_BOUNDARY_HIGH = 0.95
# DIM's gradient error: first-order Gaussian derivative filters with sigma 1.4, kernel
# truncated where the Gaussian falls under 1e-2 of its peak scale (9x9 for sigma 1.4).
_GRAD_SIGMA = 1.4
_GRAD_EPSILON = 1e-2
# DIM's connectivity error: threshold step 0.1, pixels count as disconnected from 0.15 on.
_CONN_STEP = 0.1
_CONN_THETA = 0.15

METRIC_NAMES = (
    "mse",
    "sad",
    "mad",
    "grad",
    "conn",
    "mse_boundary",
    "sad_boundary",
    "mad_boundary",
)


def _as_unit_array(name: str, x: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 0..255 or float in [0, 1] -> float64 in [0, 1]."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) array, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    return x.astype(np.float64)


def _gaussian_derivative_kernel(sigma: float) -> np.ndarray:
    """The x-derivative-of-Gaussian kernel of DIM's ``gaussgradient`` (unit L2 norm)."""
    gauss_peak = math.sqrt(2 * math.pi) * sigma
    half = math.ceil(sigma * math.sqrt(-2 * math.log(gauss_peak * _GRAD_EPSILON)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(u**2) / (2 * sigma**2)) / gauss_peak
    derivative = -u * gauss / sigma**2
    kernel = np.outer(gauss, derivative)  # rows: Gaussian in y, columns: derivative in x
    return kernel / np.sqrt(np.sum(kernel**2))


def _gradient_magnitude(x: np.ndarray, sigma: float) -> np.ndarray:
    kernel_x = _gaussian_derivative_kernel(sigma)
    # DIM convolves with edge replication; filter2D correlates, hence the flipped kernel.
    gx = cv2.filter2D(x, cv2.CV_64F, cv2.flip(kernel_x, -1), borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(x, cv2.CV_64F, cv2.flip(kernel_x.T, -1), borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def gradient_error(pred_alpha: np.ndarray, true_alpha: np.ndarray) -> float:
    """``sum (|grad pred| - |grad gt|)^2 / 1000`` over the whole image (float64 ``(H, W)``)."""
    difference = _gradient_magnitude(pred_alpha, _GRAD_SIGMA) - _gradient_magnitude(
        true_alpha, _GRAD_SIGMA
    )
    return float(np.sum(difference**2) / 1000.0)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 4-connected foreground component (DIM uses ``bwconncomp(..., 4)``)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), 4)
    if count <= 1:
        return np.zeros(binary.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # label 0 is the background
    return labels == largest


def connectivity_error(pred_alpha: np.ndarray, true_alpha: np.ndarray) -> float:
    """DIM's connectivity error over the whole image, / 1000 (float64 ``(H, W)`` in [0, 1]).

    For thresholds ``t = 0.1, 0.2, ..., 1`` the largest 4-connected component of
    ``pred >= t & gt >= t`` is found; ``l`` is the last threshold before a pixel leaves it (1 if
    it never does); ``phi = 1 - d * (d >= 0.15)`` with ``d = alpha - l``; the error is
    ``sum |phi_pred - phi_gt|``.
    """
    steps = round(1.0 / _CONN_STEP)
    thresholds = np.arange(steps + 1) * _CONN_STEP
    level = np.full(pred_alpha.shape, -1.0)
    for index in range(1, steps + 1):
        omega = _largest_component(
            (pred_alpha >= thresholds[index]) & (true_alpha >= thresholds[index])
        )
        level[(level == -1.0) & ~omega] = thresholds[index - 1]
    level[level == -1.0] = 1.0
    pred_d = pred_alpha - level
    true_d = true_alpha - level
    pred_phi = 1.0 - pred_d * (pred_d >= _CONN_THETA)
    true_phi = 1.0 - true_d * (true_d >= _CONN_THETA)
    return float(np.sum(np.abs(pred_phi - true_phi)) / 1000.0)


def boundary_region(true_alpha: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: pixels with ``0.05 < gt < 0.95`` (gt float in [0, 1])."""
    return (true_alpha > _BOUNDARY_LOW) & (true_alpha < _BOUNDARY_HIGH)


def _region_errors(error: np.ndarray, suffix: str) -> dict[str, float]:
    """MSE, SAD and MAD of the absolute errors of one region (NaN for an empty region)."""
    if error.size == 0:
        return {f"mse{suffix}": math.nan, f"sad{suffix}": math.nan, f"mad{suffix}": math.nan}
    return {
        f"mse{suffix}": float(np.mean(error**2) * 1e3),
        f"sad{suffix}": float(np.sum(error) / 1000.0),
        f"mad{suffix}": float(np.mean(error) * 1e3),
    }


def region_metrics(pred_alpha: np.ndarray, true_alpha: np.ndarray) -> dict[str, float]:
    """MSE, SAD and MAD over the whole image and the boundary region (no Grad, no Conn).

    The cheap part of :func:`matting_metrics`, same arguments and scales; for scoring many
    label maps (``mlb labels score``).
    """
    return _regions(*_unit_pair(pred_alpha, true_alpha))


def _unit_pair(pred_alpha: np.ndarray, true_alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 in [0, 1], checked to be ``(H, W)`` of one shape."""
    pred = _as_unit_array("pred_alpha", pred_alpha)
    true = _as_unit_array("true_alpha", true_alpha)
    if pred.shape != true.shape:
        raise ValueError(
            f"pred_alpha {pred.shape} and true_alpha {true.shape} must have the same shape "
            "(score at the ground truth's resolution)"
        )
    return pred, true


def _regions(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    error = np.abs(pred - true)
    return {**_region_errors(error, ""),
            **_region_errors(error[boundary_region(true)], "_boundary")}


def matting_metrics(pred_alpha: np.ndarray, true_alpha: np.ndarray) -> dict[str, float]:
    """All metrics of one image at the ground truth's resolution (method.md section 3).

    Args:
        pred_alpha: ``(H, W)`` float in [0, 1], or uint8 0..255.
        true_alpha: same shape; float in [0, 1] or uint8.

    Returns:
        ``{name: value}`` for ``METRIC_NAMES``: ``mse`` (x 1e3), ``sad`` (/ 1000), ``mad``
        (x 1e3), ``grad`` and ``conn`` (/ 1000) over every pixel, and ``mse_boundary``,
        ``sad_boundary``, ``mad_boundary`` over ``0.05 < gt < 0.95``; those three are NaN when
        the ground truth has no boundary pixel (``mean_metrics`` skips NaN).

    Raises:
        ValueError: for shapes that differ or are not 2-D, or an unsupported dtype.
    """
    pred, true = _unit_pair(pred_alpha, true_alpha)
    regions = _regions(pred, true)
    return {
        **{key: regions[key] for key in ("mse", "sad", "mad")},
        "grad": gradient_error(pred, true),
        "conn": connectivity_error(pred, true),
        **{key: regions[key] for key in ("mse_boundary", "sad_boundary", "mad_boundary")},
    }


def mean_metrics(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over images, ignoring NaN (NaN when a metric is NaN everywhere).

    Args:
        per_image: ``matting_metrics`` results (any keys; a key missing from an image is NaN).

    Returns:
        ``{name: mean}`` over the union of keys, in first-seen order; ``{}`` for no images.
    """
    rows = list(per_image)
    names = list(dict.fromkeys(name for row in rows for name in row))
    means = {}
    for name in names:
        values = np.array([row.get(name, math.nan) for row in rows], dtype=np.float64)
        finite = values[~np.isnan(values)]
        means[name] = float(finite.mean()) if finite.size else math.nan
    return means
