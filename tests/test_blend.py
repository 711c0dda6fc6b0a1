"""Matte Label Blending: properties of the batched kernel and its numpy baseline."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mlb.blend import (
    BlendConfig,
    blend_labels,
    blend_labels_numpy,
    blend_labels_with,
    dequantize_unit,
    edge_band,
    quantize_unit,
)
from mlb.losses import boundary_target


def _batch(seed, shape=(2, 1, 9, 11), dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    teacher_alpha = torch.rand(shape, generator=generator).to(dtype)
    teacher_boundary = torch.rand(shape, generator=generator).to(dtype)
    coarse_mask = (torch.rand(shape, generator=generator) > 0.5).to(dtype)
    return teacher_alpha, teacher_boundary, coarse_mask


shapes = st.tuples(st.integers(1, 3), st.just(1), st.integers(1, 12), st.integers(1, 12))
modes = st.sampled_from(["soft", "hard"])
bands = st.one_of(st.none(), st.integers(1, 4))


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), mode=modes, band_px=bands)
def test_results_are_convex_combinations_in_unit_range(shape, seed, mode, band_px):
    teacher_alpha, teacher_boundary, coarse_mask = _batch(seed, shape)
    blended, boundary = blend_labels(
        teacher_alpha, teacher_boundary, coarse_mask, mode=mode, band_px=band_px
    )
    assert blended.shape == boundary.shape == shape
    assert ((blended >= 0) & (blended <= 1)).all() and ((boundary >= 0) & (boundary <= 1)).all()
    low = torch.minimum(teacher_alpha, coarse_mask) - 1e-6
    high = torch.maximum(teacher_alpha, coarse_mask) + 1e-6
    assert ((blended >= low) & (blended <= high)).all()
    # blended_boundary is the weight actually used: the formula holds with it.
    expected = boundary * teacher_alpha + (1 - boundary) * coarse_mask
    assert torch.allclose(blended, expected)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), mode=modes)
def test_zero_boundary_gives_the_mask_and_one_gives_the_teacher(shape, seed, mode):
    teacher_alpha, teacher_boundary, coarse_mask = _batch(seed, shape)
    boundary = (teacher_boundary > 0.5).float()  # exact 0 / 1 weights
    blended, used = blend_labels(teacher_alpha, boundary, coarse_mask, mode=mode)
    assert torch.equal(blended[boundary == 0], coarse_mask[boundary == 0])
    assert torch.equal(blended[boundary == 1], teacher_alpha[boundary == 1])
    assert torch.equal(used, boundary)


def test_a_perfect_teacher_is_returned_unchanged():
    # True alpha with a soft edge; the mask equals alpha outside the boundary region and the
    # teacher is perfect (its boundary is the true boundary map): blending changes nothing.
    x = torch.linspace(-1, 1, 24)
    alpha = torch.clamp(0.5 + 2 * x, 0, 1).expand(2, 1, 16, 24).contiguous()
    boundary = boundary_target(alpha)
    coarse_mask = (alpha >= 0.5).float()
    assert torch.equal(coarse_mask[boundary == 0], alpha[boundary == 0])
    for mode in ("soft", "hard"):
        for band_px in (None, 6):
            blended, _ = blend_labels(alpha, boundary, coarse_mask, mode=mode, band_px=band_px)
            assert torch.equal(blended, alpha), (mode, band_px)


def test_hard_thresholds_the_boundary_and_soft_does_not():
    teacher_alpha = torch.full((1, 1, 1, 3), 0.8)
    teacher_boundary = torch.tensor([0.25, 0.5, 0.75]).view(1, 1, 1, 3)
    coarse_mask = torch.zeros(1, 1, 1, 3)
    soft, soft_b = blend_labels(teacher_alpha, teacher_boundary, coarse_mask)
    hard, hard_b = blend_labels(teacher_alpha, teacher_boundary, coarse_mask, mode="hard")
    assert torch.allclose(soft.flatten(), torch.tensor([0.2, 0.4, 0.6]))
    assert torch.equal(soft_b, teacher_boundary)
    assert hard.flatten().tolist() == pytest.approx([0.0, 0.0, 0.8])  # 0.5 is not > 0.5
    assert hard_b.flatten().tolist() == [0.0, 0.0, 1.0]


def test_edge_band_is_the_chebyshev_neighbourhood_of_the_mask_edge():
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 3:6, 3:6] = 1  # a 3x3 square
    band = edge_band(mask, band_px=1)
    # Band: 5x5 square around it minus the square's centre (its 3x3 neighbourhood is all mask).
    expected = torch.zeros(9, 9)
    expected[2:7, 2:7] = 1
    expected[4, 4] = 0
    assert torch.equal(band[0, 0], expected)
    # The frame border is no edge: a full mask has an empty band.
    assert edge_band(torch.ones(1, 1, 5, 5), band_px=2).sum() == 0


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), band_px=st.integers(1, 4), mode=modes)
def test_band_restricts_the_teacher_to_the_edge(shape, seed, band_px, mode):
    teacher_alpha, teacher_boundary, coarse_mask = _batch(seed, shape)
    band = edge_band(coarse_mask, band_px=band_px)
    free, free_b = blend_labels(teacher_alpha, teacher_boundary, coarse_mask, mode=mode)
    banded, banded_b = blend_labels(
        teacher_alpha, teacher_boundary, coarse_mask, mode=mode, band_px=band_px
    )
    assert torch.equal(banded[band == 0], coarse_mask[band == 0])
    assert torch.equal(banded_b[band == 0], torch.zeros_like(banded_b[band == 0]))
    assert torch.equal(banded[band == 1], free[band == 1])
    assert torch.equal(banded_b, free_b * band)


def test_wider_bands_contain_narrower_ones():
    _, _, coarse_mask = _batch(7, (2, 1, 20, 20))
    bands = [edge_band(coarse_mask, band_px=k) for k in (1, 2, 5)]
    assert (bands[0] <= bands[1]).all() and (bands[1] <= bands[2]).all()


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), mode=modes, band_px=bands)
def test_uint8_inputs_agree_with_their_float_values(shape, seed, mode, band_px):
    generator = torch.Generator().manual_seed(seed)
    u8 = [torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator) for _ in range(3)]
    from_u8 = blend_labels(*u8, mode=mode, band_px=band_px)
    from_float = blend_labels(*(x.float() / 255 for x in u8), mode=mode, band_px=band_px)
    assert all(x.dtype == torch.float32 for x in from_u8)
    assert all(torch.equal(a, b) for a, b in zip(from_u8, from_float, strict=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    blended, boundary = blend_labels(*_batch(1, dtype=dtype), band_px=2)
    assert blended.dtype == boundary.dtype == dtype


def test_mixed_dtypes_promote():
    teacher_alpha, teacher_boundary, coarse_mask = _batch(2)
    blended, _ = blend_labels(teacher_alpha.half(), teacher_boundary, quantize_unit(coarse_mask))
    assert blended.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    inputs = _batch(3, (4, 1, 64, 48))
    cpu = blend_labels(*inputs, mode="hard", band_px=3)
    gpu = blend_labels(*(x.cuda() for x in inputs), mode="hard", band_px=3)
    assert all(g.device.type == "cuda" for g in gpu)
    assert all(torch.allclose(c, g.cpu()) for c, g in zip(cpu, gpu, strict=True))


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), mode=modes, band_px=bands)
def test_numpy_baseline_agrees(shape, seed, mode, band_px):
    inputs = _batch(seed, shape)
    expected = blend_labels(*inputs, mode=mode, band_px=band_px)
    result = blend_labels_numpy(*(x.numpy() for x in inputs), mode=mode, band_px=band_px)
    for array, tensor in zip(result, expected, strict=True):
        assert array.dtype == np.float32
        np.testing.assert_allclose(array, tensor.numpy(), atol=1e-6)


def test_numpy_baseline_accepts_uint8():
    u8 = [quantize_unit(x).numpy() for x in _batch(4)]
    blended, _ = blend_labels_numpy(*u8, band_px=1)
    expected, _ = blend_labels(*(torch.from_numpy(x) for x in u8), band_px=1)
    assert blended.dtype == np.float32
    np.testing.assert_allclose(blended, expected.numpy(), atol=1e-6)


def test_config_routes_its_options():
    inputs = _batch(5)
    config = BlendConfig(mode="hard", band_px=2)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            blend_labels_with(config, *inputs),
            blend_labels(*inputs, mode="hard", band_px=2),
            strict=True,
        )
    )
    assert BlendConfig() == BlendConfig(mode="soft", band_px=None)
    for bad in ({"mode": "average"}, {"band_px": 0}, {"band": 3}):
        with pytest.raises(ValidationError):
            BlendConfig(**bad)


def test_quantize_round_trip():
    x = torch.tensor([0.0, 0.001, 0.5, 0.999, 1.0, 1.2, -0.1])
    u8 = quantize_unit(x)
    assert u8.dtype == torch.uint8
    assert u8.tolist() == [0, 0, 128, 255, 255, 255, 0]
    assert torch.all((dequantize_unit(u8) - x.clamp(0, 1)).abs() <= 0.5 / 255 + 1e-7)
    with pytest.raises(ValueError, match="uint8"):
        dequantize_unit(x)
    with pytest.raises(ValueError, match="floating"):
        quantize_unit(u8)


@pytest.mark.parametrize(
    ("position", "bad", "message"),
    [
        (0, torch.rand(2, 1, 9, 10), "differ"),
        (1, torch.rand(2, 9, 11), "teacher_boundary must be a"),
        (2, torch.rand(2, 3, 9, 11), "coarse_mask must be a"),
        (0, torch.full((2, 1, 9, 11), 1.5), r"teacher_alpha must lie in \[0, 1\].*1.5"),
        (1, torch.full((2, 1, 9, 11), float("nan")), "teacher_boundary contains NaN"),
        (2, torch.ones(2, 1, 9, 11, dtype=torch.int32), "coarse_mask must be uint8"),
    ],
)
def test_bad_inputs_name_the_argument(position, bad, message):
    inputs = list(_batch(6))
    inputs[position] = bad
    with pytest.raises(ValueError, match=message):
        blend_labels(*inputs)


def test_bad_options_name_the_option():
    inputs = _batch(6)
    with pytest.raises(ValueError, match="mode"):
        blend_labels(*inputs, mode="Soft")
    for band_px in (0, 1.5, True):
        with pytest.raises(ValueError, match="band_px"):
            blend_labels(*inputs, band_px=band_px)


def test_numpy_integer_band_is_accepted():
    inputs = _batch(8)
    expected = blend_labels(*inputs, band_px=2)
    result = blend_labels(*inputs, band_px=np.int64(2))
    assert all(torch.equal(a, b) for a, b in zip(result, expected, strict=True))


def test_an_ulp_outside_the_unit_range_is_clamped_and_further_is_named():
    teacher_alpha, teacher_boundary, coarse_mask = _batch(6)
    above_one = torch.nextafter(torch.ones(()), torch.full((), 2.0))  # 1 + 2**-23
    resampled = coarse_mask.clone()
    resampled[0, 0, 0, 0] = above_one
    resampled[0, 0, 0, 1] = -1e-8
    expected = blend_labels(teacher_alpha, teacher_boundary, resampled.clamp(0, 1))
    result = blend_labels(teacher_alpha, teacher_boundary, resampled)
    assert all(torch.equal(a, b) for a, b in zip(result, expected, strict=True))
    resampled[0, 0, 0, 0] = 1.0001
    with pytest.raises(ValueError, match=r"coarse_mask must lie in \[0, 1\].*1\.0001"):
        blend_labels(teacher_alpha, teacher_boundary, resampled)
