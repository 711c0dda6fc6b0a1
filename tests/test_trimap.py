"""Trimaps from coarse masks (method.md section 2): values, containment, monotonicity."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlb.data.trimap import DEFAULT_KERNEL_RANGE, erode_trimap, trimap_from_mask


def disc(size=64, radius=20):
    y, x = np.mgrid[0:size, 0:size]
    return (((y - size / 2) ** 2 + (x - size / 2) ** 2) <= radius**2).astype(np.float32)


def test_default_kernel_range_is_the_papers():
    assert DEFAULT_KERNEL_RANGE == (1, 29)


def test_values_and_regions():
    mask = disc()
    trimap = erode_trimap(mask, foreground_kernel=7, background_kernel=9)
    assert trimap.dtype == np.float32 and trimap.shape == mask.shape
    assert set(np.unique(trimap)) == {0.0, 0.5, 1.0}
    assert np.all(mask[trimap == 1.0] == 1) and np.all(mask[trimap == 0.0] == 0)
    # The unknown band straddles the edge: about 3 px inside and 4 px outside.
    radius = np.hypot(*np.nonzero(trimap == 0.5) - np.array([[32], [32]]))
    assert 15.5 < radius.min() < 18 and 22 < radius.max() < 25.5


def test_kernel_one_means_no_unknown_band():
    mask = disc()
    np.testing.assert_array_equal(
        erode_trimap(mask, foreground_kernel=1, background_kernel=1), mask)


def test_image_frame_is_not_an_edge():
    mask = np.ones((20, 20), np.float32)
    mask[:, 10:] = 0
    trimap = erode_trimap(mask, foreground_kernel=5, background_kernel=5)
    # Only the vertical edge at column 10 makes an unknown band, not the frame.
    assert np.all(trimap[:, :8] == 1) and np.all(trimap[:, 12:] == 0)


def test_soft_masks_are_binarised_at_half():
    mask = disc() * 0.6  # every foreground value above 0.5
    np.testing.assert_array_equal(
        erode_trimap(mask, foreground_kernel=5, background_kernel=5),
        erode_trimap(disc(), foreground_kernel=5, background_kernel=5))


def test_random_trimaps_are_reproducible_and_vary():
    mask = disc()
    first = trimap_from_mask(mask, rng=np.random.default_rng(0))
    again = trimap_from_mask(mask, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(first, again)
    widths = {int((trimap_from_mask(mask, rng=np.random.default_rng(seed)) == 0.5).sum())
              for seed in range(10)}
    assert len(widths) > 3


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"kernel_range"):
        trimap_from_mask(disc(), rng=np.random.default_rng(0), kernel_range=(0, 5))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        erode_trimap(np.zeros((1, 8, 8)), foreground_kernel=3, background_kernel=3)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), small=st.integers(1, 15), extra=st.integers(0, 14))
def test_larger_kernels_only_grow_the_unknown_band(seed, small, extra):
    rng = np.random.default_rng(seed)
    mask = (rng.random((6, 6)) > 0.5).astype(np.float32).repeat(8, 0).repeat(8, 1)
    narrow = erode_trimap(mask, foreground_kernel=small, background_kernel=small)
    wide = erode_trimap(mask, foreground_kernel=small + extra, background_kernel=small + extra)
    assert np.all(wide[narrow == 0.5] == 0.5)
    assert np.all(mask[wide == 1.0] == 1) and np.all(mask[wide == 0.0] == 0)
