"""LabelSetDataset: a published version read back with its corpus, through real zarr stores."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from relabel_corpus import make_corpus, make_request, make_teacher
from torch.utils.data import DataLoader

from mlb.data.augment import AugmentConfig, PairedPreset, ShortSideResize, weak_preset
from mlb.data.imageio import image_size, read_image, read_mask
from mlb.labels.dataset import LabelSetDataset
from mlb.labels.relabel import relabel
from mlb.labels.store import CorpusChanged
from storage import LabelStore

KEYS = {"image", "coarse_mask", "blended_alpha", "blended_boundary", "sample_id"}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("labelset")
    images, masks = make_corpus(root / "corpus", 7)
    (images / "p003.jpg").write_bytes(b"broken")  # quarantined: not in the dataset
    teacher = make_teacher(root / "teacher.pt")
    request = make_request(teacher, images, masks, root / "store", skip_bad=True)
    summary = relabel(request, progress=False)
    return {"root": root, "images": images, "masks": masks, "store": str(root / "store"),
            "version_id": summary.version_id}


def test_items_at_original_size(labelled):
    dataset = LabelSetDataset(labelled["store"], "latest")
    assert dataset.version_id == labelled["version_id"]
    assert dataset.sample_ids == ["p000", "p001", "p002", "p004", "p005", "p006"]
    version = LabelStore(labelled["store"]).open_version(labelled["version_id"])
    for index, sample_id in enumerate(dataset.sample_ids):
        item = dataset[index]
        assert set(item) == KEYS and item["sample_id"] == sample_id
        height, width = image_size(labelled["images"] / f"{sample_id}.jpg")
        assert item["image"].shape == (3, height, width)
        for key in ("coarse_mask", "blended_alpha", "blended_boundary"):
            assert item[key].shape == (1, height, width) and item[key].dtype == torch.float32
            assert type(item[key]) is torch.Tensor  # plain tensors out of the dataset
            assert item[key].min() >= 0.0 and item[key].max() <= 1.0
        expected_image = read_image(labelled["images"] / f"{sample_id}.jpg")
        assert torch.equal(item["image"], torch.from_numpy(expected_image).permute(2, 0, 1) / 255)
        expected_mask = read_mask(labelled["masks"] / f"{sample_id}.png", size=(height, width))
        assert np.array_equal(item["coarse_mask"][0].numpy(), expected_mask)
        stored = version.read(sample_id).blended_alpha
        assert np.array_equal(np.rint(item["blended_alpha"][0].numpy() * 255), stored)


def test_transform_moves_labels_with_the_image(labelled):
    dataset = LabelSetDataset(labelled["store"], labelled["version_id"],
                              transform=PairedPreset(ShortSideResize(32)))
    item = dataset[1]  # p001 is 72x50 -> 46x32
    assert item["image"].shape == (3, 46, 32)
    assert item["blended_alpha"].shape == item["coarse_mask"].shape == (1, 46, 32)

    torch.manual_seed(0)
    crop = AugmentConfig(short_side=64, crop_sizes=(48,), output_size=40, flip_prob=1.0)
    augmented = LabelSetDataset(labelled["store"], "latest", transform=weak_preset(crop))[2]
    assert {augmented[key].shape[-2:] for key in KEYS - {"sample_id"}} == {(40, 40)}


def test_pickles_without_open_handles_and_loads_in_workers(labelled):
    dataset = LabelSetDataset(labelled["store"], "latest")
    dataset[0]  # opens zarr arrays in this process
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._version is None and clone.sample_ids == dataset.sample_ids
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    ids = [item["sample_id"] for item in loader]
    assert ids == dataset.sample_ids


def test_changed_corpus_file_is_named(labelled, tmp_path):
    dataset = LabelSetDataset(labelled["store"], "latest")
    image = labelled["images"] / "p002.jpg"
    backup = tmp_path / "p002.jpg"
    shutil.copy(image, backup)
    try:
        image.write_bytes(image.read_bytes() + b"\0")  # same pixels, other bytes
        with pytest.raises(CorpusChanged, match=r"p002\.jpg.*changed since label version"):
            dataset[2]
        assert set(LabelSetDataset(labelled["store"], "latest", check_files=False)[2]) == KEYS
    finally:
        shutil.copy(backup, image)
    assert dataset[2]["sample_id"] == "p002"


def test_unknown_version_is_a_clear_error(labelled):
    with pytest.raises(FileNotFoundError, match="v-0000000000000000"):
        LabelSetDataset(labelled["store"], "v-0000000000000000")


def test_memory_store(labelled, tmp_path):
    images, masks = make_corpus(tmp_path / "corpus", 3)
    request = make_request(labelled["root"] / "teacher.pt", images, masks,
                           "memory://labelset-test")
    relabel(request, progress=False)
    dataset = LabelSetDataset("memory://labelset-test", "latest")
    assert [dataset[i]["blended_alpha"].shape[-2:] for i in range(3)] == [
        image_size(images / f"p00{i}.jpg") for i in range(3)]
