"""All 290 real photos of ../shared/data/human-seg-290 load with correctly aligned masks."""

import cv2
import numpy as np
import pytest

from mlb.data.augment import AugmentConfig, weak_preset
from mlb.data.corpus import find_segmentation_samples
from mlb.data.datasets import SegmentationDataset
from mlb.data.imageio import image_size, read_image, read_mask


@pytest.fixture(scope="module")
def loaded(request):
    root = request.getfixturevalue("human_seg_290")
    scan = find_segmentation_samples(root / "Training_Images", root / "Ground_Truth")
    pairs = []
    for sample in scan.samples:
        image = read_image(sample.image_path)
        pairs.append((sample, image, read_mask(sample.mask_path, size=image.shape[:2])))
    return scan, pairs


def edge_gradient(image, mask, shift=0):
    """Mean image gradient magnitude on the mask's outline (optionally shifted by px)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    binary = (np.roll(mask, shift, axis=(0, 1)) > 0.5).astype(np.uint8)
    outline = cv2.morphologyEx(binary, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    return float(gradient[outline].mean()), float(gradient.mean())


def test_all_290_pairs_found(loaded):
    scan, _ = loaded
    assert len(scan.samples) == 290 and scan.quarantine == ()
    ids = [sample.sample_id for sample in scan.samples]
    assert ids[:3] == ["1", "2", "3"] and ids[-1] == "300"


def test_masks_are_resized_to_their_images(loaded):
    _, pairs = loaded
    resized = 0
    for sample, image, mask in pairs:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.shape == image.shape[:2], sample.sample_id
        assert set(np.unique(mask)) <= {0.0, 1.0}, sample.sample_id
        resized += image_size(sample.mask_path) != image.shape[:2]
    assert resized == 198  # SOURCE.md: 198 of 290 masks are stored at another resolution


def test_grayscale_photos_become_rgb(loaded):
    _, pairs = loaded
    gray = {sample.sample_id: image for sample, image, _ in pairs
            if sample.sample_id in ("56", "97")}
    assert set(gray) == {"56", "97"}
    for image in gray.values():
        assert np.array_equal(image[:, :, 0], image[:, :, 1])
        assert np.array_equal(image[:, :, 1], image[:, :, 2])


def test_foreground_fractions_are_sane(loaded):
    _, pairs = loaded
    fractions = np.array([mask.mean() for _, _, mask in pairs])
    # Never empty or full; small people in street scenes (GRAZ-01) go down to ~1.5 %.
    assert fractions.min() > 0.01 and fractions.max() < 0.95
    assert 0.15 < np.median(fractions) < 0.6


def test_mask_edges_sit_on_image_edges(loaded):
    _, pairs = loaded
    aligned, shifted, overall = [], [], []
    for _, image, mask in pairs:
        on_edge, mean = edge_gradient(image, mask)
        off_edge, _ = edge_gradient(image, mask, shift=max(8, image.shape[0] // 30))
        aligned.append(on_edge)
        shifted.append(off_edge)
        overall.append(mean)
    aligned, shifted, overall = map(np.array, (aligned, shifted, overall))
    # Outlines coincide with image gradients far more than chance (the whole image) ...
    assert np.median(aligned / overall) > 1.5
    # ... and more than the same outline displaced: a misaligned mask would fail here.
    assert np.mean(aligned > shifted) > 0.85
    assert np.median(shifted / overall) < np.median(aligned / overall) / 1.3


def test_dataset_items_from_real_photos(loaded):
    scan, _ = loaded
    config = AugmentConfig(short_side=128, crop_sizes=(96, 128), output_size=96)
    dataset = SegmentationDataset(scan.samples[:4], weak_preset(config))
    item = dataset[3]
    assert item["image"].shape == (3, 96, 96) and item["coarse_mask"].shape == (1, 96, 96)
    assert item["sample_id"] == "4"
