"""Torch datasets: item contracts, compositing, and skipping bad files at read time."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mlb.data.augment import AugmentConfig, weak_preset
from mlb.data.compositing import photographic_composite
from mlb.data.corpus import (
    BadSample,
    find_matte_samples,
    find_segmentation_samples,
)
from mlb.data.datasets import (
    CompositeDataset,
    SegmentationDataset,
    composite,
    fit_background,
)
from mlb.data.imageio import read_image, write_jpeg, write_png


@pytest.fixture
def segmentation_dir(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(4):
        image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        write_png(tmp_path / "images" / f"{index}.png", image)
        mask = np.zeros((10, 15), np.uint8)  # half resolution, as in human-seg-290
        mask[:, : 5 + index] = 255
        write_png(tmp_path / "masks" / f"{index}.png", mask)
    return tmp_path


def test_segmentation_item_contract(segmentation_dir):
    scan = find_segmentation_samples(segmentation_dir / "images", segmentation_dir / "masks")
    item = SegmentationDataset(scan.samples)[1]
    assert set(item) == {"image", "coarse_mask", "sample_id"}
    assert item["sample_id"] == "1"
    assert type(item["image"]) is torch.Tensor and type(item["coarse_mask"]) is torch.Tensor
    assert item["image"].shape == (3, 20, 30) and item["image"].dtype == torch.float32
    assert item["coarse_mask"].shape == (1, 20, 30)
    assert item["image"].min() >= 0 and item["image"].max() <= 1
    # mask resized (nearest) to the image: 6 of 15 stored columns -> 12 of 30
    assert item["coarse_mask"][0, 0].sum() == 12


def test_segmentation_batches_through_a_dataloader(segmentation_dir):
    scan = find_segmentation_samples(segmentation_dir / "images", segmentation_dir / "masks")
    config = AugmentConfig(short_side=20, crop_sizes=(16,), output_size=16)
    loader = DataLoader(SegmentationDataset(scan.samples, weak_preset(config)), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["coarse_mask"].shape == (2, 1, 16, 16)
    assert batch["sample_id"] == ["0", "1"]


def test_truncated_file_found_at_read_time(segmentation_dir):
    path = segmentation_dir / "images" / "2.png"
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    write_jpeg(segmentation_dir / "images" / "2.jpg", noise)  # large: cut in the pixel data
    path.unlink()
    data = (segmentation_dir / "images" / "2.jpg").read_bytes()
    (segmentation_dir / "images" / "2.jpg").write_bytes(data[: len(data) // 2])
    # The header is intact, so the scan accepts it; decoding finds the truncation.
    scan = find_segmentation_samples(segmentation_dir / "images", segmentation_dir / "masks")
    assert len(scan.samples) == 4
    with pytest.raises(BadSample, match=r"2.jpg"):
        SegmentationDataset(scan.samples)[2]
    skipping = SegmentationDataset(scan.samples, skip_bad=True)
    item = skipping[2]
    assert item["sample_id"] == "3"  # the next readable sample stands in
    assert [(q.sample_id, q.path.name) for q in skipping.quarantine] == [("2", "2.jpg")]
    skipping[2]
    assert len(skipping.quarantine) == 1  # recorded once


def test_every_sample_bad_is_an_error(segmentation_dir):
    scan = find_segmentation_samples(segmentation_dir / "images", segmentation_dir / "masks")
    for sample in scan.samples:
        sample.image_path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"every sample is unreadable"):
        SegmentationDataset(scan.samples, skip_bad=True)[0]


def test_empty_sample_list_is_an_error():
    with pytest.raises(ValueError, match=r"no samples"):
        SegmentationDataset([])


def test_composite_formula():
    foreground = np.full((2, 2, 3), 200, np.uint8)
    background = np.full((2, 2, 3), 100, np.uint8)
    alpha = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    out = composite(foreground, alpha, background)
    np.testing.assert_array_equal(out[:, :, 0], [[100, 200], [150, 125]])


def test_fit_background_covers_without_stretching():
    background = np.zeros((10, 40, 3), np.uint8)
    background[:, 20:] = 255
    out = fit_background(background, (20, 20), rng=np.random.default_rng(0))
    assert out.shape == (20, 20, 3)  # scaled 2x to 20x80, then cropped


@pytest.fixture
def matte_dir(tmp_path):
    rng = np.random.default_rng(1)
    for index in range(3):
        write_png(tmp_path / "fg" / f"{index}.png", rng.integers(0, 256, (12, 12, 3), np.uint8))
        alpha = np.zeros((12, 12), np.uint8)
        alpha[3:9, 3:9] = 255
        alpha[3:9, 2] = 128
        write_png(tmp_path / "alpha" / f"{index}.png", alpha)
    for index in range(4):
        write_png(tmp_path / "bg" / f"b{index}.png",
                  np.full((16, 20, 3), 40 * index, np.uint8))
    return tmp_path


def test_composite_dataset_is_alpha_blend_and_deterministic(matte_dir):
    scan = find_matte_samples(matte_dir / "fg", matte_dir / "alpha", matte_dir / "bg")
    dataset = CompositeDataset(scan.samples, scan.backgrounds, length=7, seed=3)
    assert len(dataset) == 7
    item = dataset[4]
    assert set(item) == {"image", "alpha", "sample_id"} and item["sample_id"] == "1"
    assert item["image"].shape == (3, 12, 12) and item["alpha"].shape == (1, 12, 12)
    foreground = torch.from_numpy(read_image(scan.samples[1].foreground_path)).permute(2, 0, 1)
    foreground = foreground / 255
    inside = item["alpha"][0] == 1
    torch.testing.assert_close(item["image"][:, inside], foreground[:, inside])
    outside = item["image"][:, item["alpha"][0] == 0]
    assert torch.allclose(outside, outside[:, :1].expand_as(outside))  # one flat background
    again = CompositeDataset(scan.samples, scan.backgrounds, length=7, seed=3)[4]
    torch.testing.assert_close(again["image"], item["image"])
    backgrounds = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        backgrounds.add(round(float(dataset[4]["image"][0, 0, 0]), 4))
    assert len(backgrounds) > 1  # new pairings per epoch


def test_composite_dataset_needs_backgrounds(matte_dir):
    scan = find_matte_samples(matte_dir / "fg", matte_dir / "alpha")
    with pytest.raises(ValueError, match=r"background"):
        CompositeDataset(scan.samples, scan.backgrounds)


def test_photographic_composite_keeps_the_alpha_and_looks_photographed(matte_dir):
    scan = find_matte_samples(matte_dir / "fg", matte_dir / "alpha", matte_dir / "bg")
    plain = CompositeDataset(scan.samples, scan.backgrounds, seed=3)[1]
    photo = CompositeDataset(scan.samples, scan.backgrounds, seed=3, photographic=True)
    item = photo[1]
    torch.testing.assert_close(item["alpha"], plain["alpha"])  # the label is untouched
    assert item["image"].shape == plain["image"].shape and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    torch.testing.assert_close(photo[1]["image"], item["image"])  # same item, same draw
    # noise and compression: a flat plain background is no longer flat
    outside = item["alpha"][0] == 0
    assert float(plain["image"][:, outside].std(dim=1).max()) == 0.0
    assert float(item["image"][:, outside].std(dim=1).max()) > 1 / 255


def test_photographic_composite_checks_shapes():
    rng = np.random.default_rng(0)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"share one \(H, W\)"):
        photographic_composite(image, np.zeros((8, 9), np.float32), image, rng=rng)
