"""Paired presets: identical geometry on image and labels, colour on the image only."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torchvision import tv_tensors

from mlb.data.augment import AugmentConfig, strong_preset, weak_preset

SMALL = AugmentConfig(short_side=48, scale_range=(1.0, 1.5), crop_sizes=(24, 32, 40),
                      output_size=32)


def blobs_sample(height=48, width=64, seed=0):
    """An image of smooth random blobs and a mask derived from it (red > 0.5)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(3, height // 8, width // 8, generator=generator)
    image = torch.nn.functional.interpolate(coarse[None], size=(height, width),
                                            mode="bicubic", align_corners=False)[0].clamp(0, 1)
    mask = (image[:1] > 0.5).float()
    return {"image": image, "coarse_mask": tv_tensors.Mask(mask), "sample_id": "blobs"}


def agreement(sample):
    return float(((sample["image"][0] > 0.5) == (sample["coarse_mask"][0] > 0.5))
                 .float().mean())


def test_geometry_is_shared_by_image_and_mask():
    for seed in range(8):
        torch.manual_seed(seed)
        out = weak_preset(SMALL)(blobs_sample(seed=seed))
        # Resampling blurs both the same way; only pixels right at the threshold may differ.
        assert agreement(out) > 0.97


def test_the_alignment_check_can_fail():
    torch.manual_seed(0)
    out = weak_preset(SMALL)(blobs_sample(seed=1))
    misaligned = {**out, "coarse_mask": out["coarse_mask"].flip(-1).roll(5, dims=-2)}
    assert agreement(misaligned) < 0.9


def test_weak_preset_output_contract():
    torch.manual_seed(0)
    sample = blobs_sample()
    sample["alpha"] = tv_tensors.Mask(torch.rand(1, 48, 64))
    out = weak_preset(SMALL)(sample)
    assert out["image"].shape == (3, 32, 32)
    assert out["coarse_mask"].shape == out["alpha"].shape == (1, 32, 32)
    assert isinstance(out["coarse_mask"], tv_tensors.Mask)
    assert out["sample_id"] == "blobs"
    assert float(out["alpha"].min()) >= 0 and float(out["alpha"].max()) <= 1


def test_flip_is_applied_to_every_label():
    config = SMALL.model_copy(update={"flip_prob": 1.0, "scale_range": (1.0, 1.0),
                                      "crop_sizes": (48,), "output_size": None})
    sample = blobs_sample(48, 48)
    out = weak_preset(config)(sample)
    torch.testing.assert_close(out["image"], sample["image"].flip(-1))
    torch.testing.assert_close(out["coarse_mask"].as_subclass(torch.Tensor),
                               sample["coarse_mask"].flip(-1).as_subclass(torch.Tensor))


def test_colour_ops_leave_masks_untouched():
    # Identity geometry (no scale, full-size crop, no flip), photometric ops always on.
    config = AugmentConfig(short_side=None, scale_range=(1.0, 1.0), crop_sizes=(48,),
                           output_size=None, flip_prob=0.0, jitter_prob=1.0, blur_prob=1.0,
                           noise_prob=1.0)
    sample = blobs_sample(48, 48)
    sample["alpha"] = tv_tensors.Mask(torch.rand(1, 48, 48))
    torch.manual_seed(0)
    out = strong_preset(config)(sample)
    assert torch.equal(out["coarse_mask"], sample["coarse_mask"])
    assert torch.equal(out["alpha"], sample["alpha"])
    assert (out["image"] - sample["image"]).abs().mean() > 0.01


def test_discrete_labels_stay_discrete():
    torch.manual_seed(0)
    sample = blobs_sample()
    trimap = torch.zeros(1, 48, 64, dtype=torch.uint8)
    trimap[:, 10:30, 10:40] = 128
    trimap[:, 15:25, 15:35] = 255
    sample["trimap"] = tv_tensors.Mask(trimap)
    out = weak_preset(SMALL)(sample)
    assert set(out["trimap"].unique().tolist()) <= {0, 128, 255}


def test_small_images_are_padded_to_the_crop():
    config = AugmentConfig(short_side=None, scale_range=(1.0, 1.0), crop_sizes=(32,),
                           output_size=None, flip_prob=0.0)
    sample = blobs_sample(16, 16)
    sample["coarse_mask"] = tv_tensors.Mask(torch.ones(1, 16, 16))
    out = weak_preset(config)(sample)
    assert out["image"].shape == (3, 32, 32)
    assert out["coarse_mask"].sum() == 16 * 16  # labels padded with background (0)
    assert out["image"][:, :8].abs().sum() == 0  # padding is black, split evenly


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"zero-size"):
        weak_preset(SMALL)({"image": torch.zeros(3, 0, 10)})
    with pytest.raises(ValueError, match=r"label 'coarse_mask' is \(10, 10\)"):
        weak_preset(SMALL)({"image": torch.zeros(3, 8, 8),
                            "coarse_mask": tv_tensors.Mask(torch.zeros(1, 10, 10))})
    with pytest.raises(TypeError, match=r"tv_tensors.Mask"):
        weak_preset(SMALL)({"image": torch.zeros(3, 8, 8), "alpha": torch.zeros(1, 8, 8)})
    with pytest.raises(KeyError, match=r"image"):
        weak_preset(SMALL)({"alpha": tv_tensors.Mask(torch.zeros(1, 8, 8))})


def test_config_validation():
    with pytest.raises(ValidationError, match=r"scale_range"):
        AugmentConfig(scale_range=(1.5, 1.0))
    with pytest.raises(ValidationError, match=r"crop_sizes"):
        AugmentConfig(crop_sizes=())
    with pytest.raises(ValidationError):
        AugmentConfig(flip_probability=0.5)  # unknown keys are typos
    # a crop wider than the largest scaled short side would always be mostly padding
    with pytest.raises(ValidationError, match=r"exceed the largest scaled image side \(72 px"):
        AugmentConfig(short_side=48, scale_range=(1.0, 1.5), crop_sizes=(32, 80))
    AugmentConfig(short_side=48, scale_range=(1.0, 1.5), crop_sizes=(72,))
    AugmentConfig(short_side=None, crop_sizes=(4096,))  # stored sizes: small images pad
    with pytest.raises(ValidationError):
        SMALL.flip_prob = 0.0  # frozen


@settings(max_examples=25, deadline=None)
@given(height=st.integers(4, 90), width=st.integers(4, 90), seed=st.integers(0, 2**16))
def test_any_size_comes_out_at_the_output_size(height, width, seed):
    torch.manual_seed(seed)
    out = strong_preset(SMALL)(blobs_sample(max(height, 8), max(width, 8), seed=seed))
    assert out["image"].shape == (3, 32, 32) and out["coarse_mask"].shape == (1, 32, 32)
    assert torch.isfinite(out["image"]).all()
