"""Matting metrics: hand-computed values, invariants and the evaluation conventions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlb.metrics import (
    METRIC_NAMES,
    _gaussian_derivative_kernel,
    boundary_region,
    connectivity_error,
    gradient_error,
    matting_metrics,
    mean_metrics,
)

unit_images = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.floats(0, 1),
)


def test_hand_computed_2x2():
    pred = np.array([[0.0, 1.0], [0.5, 0.5]])
    true = np.array([[0.0, 0.5], [1.0, 0.5]])  # errors 0, 0.5, 0.5, 0
    metrics = matting_metrics(pred, true)
    assert metrics["mse"] == pytest.approx(0.125 * 1e3)
    assert metrics["sad"] == pytest.approx(1.0 / 1000)
    assert metrics["mad"] == pytest.approx(0.25 * 1e3)
    # Boundary region: the two 0.5 pixels of gt, errors 0.5 and 0.
    assert metrics["mse_boundary"] == pytest.approx(0.125 * 1e3)
    assert metrics["sad_boundary"] == pytest.approx(0.5 / 1000)
    assert metrics["mad_boundary"] == pytest.approx(0.25 * 1e3)


def test_boundary_region_is_strictly_inside_the_thresholds():
    true = np.array([[0.0, 0.05, 0.06, 0.5], [0.94, 0.95, 1.0, 0.3]])
    expected = np.array([[False, False, True, True], [True, False, False, True]])
    np.testing.assert_array_equal(boundary_region(true), expected)
    pred = true.copy()
    pred[0, 1] = 1.0  # gt 0.05: an error outside the boundary counts for the whole image only
    metrics = matting_metrics(pred, true)
    assert metrics["sad"] == pytest.approx(0.95 / 1000)
    assert metrics["sad_boundary"] == 0.0
    pred[1, 3] = 0.0  # gt 0.3: inside
    assert matting_metrics(pred, true)["sad_boundary"] == pytest.approx(0.3 / 1000)


def test_without_boundary_pixels_the_boundary_metrics_are_nan():
    metrics = matting_metrics(np.zeros((4, 4)), np.ones((4, 4)))
    assert metrics["mse"] == pytest.approx(1e3)
    assert all(math.isnan(metrics[f"{name}_boundary"]) for name in ("mse", "sad", "mad"))


def test_connectivity_by_hand_on_4x4():
    # gt all 1; pred 1 except pixel (3, 3) = 0. The pixel leaves the largest component at the
    # first threshold (l = 0): phi_pred = 1 - 0, phi_gt = 1 - 1 -> error 1; others have d = 0.
    true = np.ones((4, 4))
    pred = true.copy()
    pred[3, 3] = 0.0
    assert connectivity_error(pred, true) == pytest.approx(1 / 1000)


def test_connectivity_ignores_pixels_disconnected_in_both():
    # Row: pred 1 1 0 1, gt all 1. The largest 4-connected component is the left pair; pixel 3
    # is cut off from t = 0.1 on (l = 0), where both alphas are 1: phi = 0 for both, no error.
    # Pixel 2 (pred 0) costs 1 as above.
    pred = np.array([[1.0, 1.0, 0.0, 1.0]])
    assert connectivity_error(pred, np.ones((1, 4))) == pytest.approx(1 / 1000)
    # 4-connectivity: diagonal neighbours are separate components.
    diagonal = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert connectivity_error(diagonal, diagonal) == 0.0
    assert connectivity_error(diagonal, np.ones((2, 2))) == pytest.approx(2 / 1000)


def test_gradient_kernel_matches_dim():
    kernel = _gaussian_derivative_kernel(1.4)
    assert kernel.shape == (9, 9)  # halfsize ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) 1.4e-2))) = 4
    assert np.sum(kernel**2) == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, -kernel[:, ::-1])  # odd in x
    np.testing.assert_allclose(kernel, kernel[::-1, :])  # even in y
    assert kernel[4, 3] > 0  # -u * gauss / sigma^2 is positive left of the centre


def _convolve_replicate(image, kernel):
    """True 2-D convolution with edge replication, by explicit sums (no OpenCV)."""
    half = kernel.shape[0] // 2
    padded = np.pad(image, half, mode="edge")
    out = np.zeros_like(image)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            shifted = padded[
                2 * half - i : 2 * half - i + image.shape[0],
                2 * half - j : 2 * half - j + image.shape[1],
            ]
            out += kernel[i, j] * shifted
    return out


def test_gradient_error_matches_an_explicit_convolution():
    rng = np.random.default_rng(0)
    pred, true = rng.random((7, 10)), rng.random((7, 10))
    kernel = _gaussian_derivative_kernel(1.4)

    def magnitude(x):
        return np.hypot(_convolve_replicate(x, kernel), _convolve_replicate(x, kernel.T))

    expected = np.sum((magnitude(pred) - magnitude(true)) ** 2) / 1000
    assert gradient_error(pred, true) == pytest.approx(expected, rel=1e-10)


def test_gradient_of_constants_is_zero_and_of_an_edge_is_not():
    assert gradient_error(np.full((6, 6), 0.3), np.full((6, 6), 0.9)) == pytest.approx(0, abs=1e-20)
    edge = np.zeros((6, 6))
    edge[:, 3:] = 1.0
    assert gradient_error(edge, np.zeros((6, 6))) > 0


@settings(max_examples=30, deadline=None)
@given(unit_images)
def test_perfect_prediction_scores_zero(alpha):
    metrics = matting_metrics(alpha, alpha)
    assert set(metrics) == set(METRIC_NAMES)
    for name, value in metrics.items():
        assert math.isnan(value) or value == 0.0, name
        assert not math.isnan(value) or name.endswith("_boundary")


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_symmetry(data):
    pred = data.draw(unit_images)
    true = data.draw(hnp.arrays(np.float64, pred.shape, elements=st.floats(0, 1)))
    forward = matting_metrics(pred, true)
    # Errors, gradient and connectivity are symmetric in (pred, gt); the region is not.
    backward = matting_metrics(true, pred)
    for name in ("mse", "sad", "mad", "grad", "conn"):
        assert forward[name] == pytest.approx(backward[name], rel=1e-9, abs=1e-12), name
    # Transposing both images changes nothing (the x and y filters are transposes). Conn is
    # left out: between equally large components DIM keeps the first in scan order.
    transposed = matting_metrics(pred.T, true.T)
    for name in set(METRIC_NAMES) - {"conn"}:
        assert forward[name] == pytest.approx(transposed[name], rel=1e-9, abs=1e-12, nan_ok=True)
    assert all(forward[name] >= 0 or math.isnan(forward[name]) for name in METRIC_NAMES)


def test_uint8_inputs_are_rescaled():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    true = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    from_u8 = matting_metrics(pred, true)
    from_float = matting_metrics(pred / 255.0, true.astype(np.float32) / 255)
    for name in METRIC_NAMES:
        assert from_u8[name] == pytest.approx(from_float[name], rel=1e-6, nan_ok=True)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"same shape"):
        matting_metrics(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"pred_alpha must be an \(H, W\) array"):
        matting_metrics(np.zeros((4, 5, 1)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="true_alpha must be uint8"):
        matting_metrics(np.zeros((4, 5)), np.zeros((4, 5), dtype=np.int64))


def test_mean_metrics_skips_nan():
    rows = [
        {"mse": 1.0, "mse_boundary": math.nan},
        {"mse": 3.0, "mse_boundary": 4.0},
        {"mse": 5.0, "mse_boundary": math.nan, "extra": 2.0},
    ]
    means = mean_metrics(rows)
    assert list(means) == ["mse", "mse_boundary", "extra"]
    assert means["mse"] == 3.0 and means["mse_boundary"] == 4.0 and means["extra"] == 2.0
    assert math.isnan(mean_metrics([{"mse_boundary": math.nan}])["mse_boundary"])
    assert mean_metrics([]) == {}
