"""A published label version as a torch Dataset: corpus images with their cached MLB labels.

Student training reads the offline labels (method.md section 1, "Offline form"): images and
coarse masks come from the corpus files the version's manifest names, ``blended_alpha`` and
``blended_boundary`` from the label store, all at the image's original size. Each item is

    {"image": (3, H, W) float32 in [0, 1], "coarse_mask": (1, H, W) float32 in [0, 1],
     "blended_alpha": (1, H, W) float32 in [0, 1], "blended_boundary": (1, H, W) float32,
     "sample_id": str}

after the paired ``transform`` (an :mod:`mlb.data.augment` preset). Label maps are handed to it
as ``tv_tensors.Mask``, so geometric ops move them with the image and colour ops leave them
alone. Quarantined samples are not in the dataset.

Corpus drift: with ``check_files`` (default) each image and mask is hashed as it is read and
compared with the manifest, so a file edited after labelling raises :class:`CorpusChanged`
naming it, at no extra pass over the corpus.

Workers: the dataset pickles to plain values (store URL, version id, manifest entries); each
DataLoader worker opens the store and its zarr arrays on first use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mlb.data.datasets import image_to_tensor, label_to_tensor
from mlb.data.imageio import read_image, read_mask
from mlb.data.preview import save_grid, tile_rgb
from storage import LabelStore, LabelVersion, ManifestEntry

__all__ = ["CorpusChanged", "LabelSetDataset", "preview_version"]

Transform = Callable[[dict[str, Any]], dict[str, Any]]


class CorpusChanged(ValueError):
    """A corpus file's bytes differ from the ones its label version was made from."""


def check_file_hash(path: str | os.PathLike, expected_sha256: str, *, sample_id: str,
                    version_id: str) -> None:
    """Hash ``path`` and raise :class:`CorpusChanged` naming it unless it matches.

    The file is read once here; the decoder that follows reads it again from the page cache.
    """
    try:
        with open(path, "rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} (sample {sample_id!r} of label version {version_id}) "
                                "no longer exists") from None
    if actual != expected_sha256:
        raise CorpusChanged(f"{path} (sample {sample_id!r}) changed since label version "
                            f"{version_id} was made from it: sha256 {actual}, expected "
                            f"{expected_sha256}; relabel the corpus or restore the file")


def _unit_mask(values: np.ndarray) -> tv_tensors.Mask:
    """``(H, W) uint8`` 0..255 -> ``(1, H, W) float32`` in [0, 1] as a Mask."""
    return label_to_tensor(values.astype(np.float32) / np.float32(255.0))


class LabelSetDataset(Dataset):
    """Items of a published label version (see the module docstring for their layout).

    ``store``: local path or fsspec URL; ``version``: an id or ``"latest"``;
    ``transform``: a paired preset called on the item dict; ``check_files``: compare each
    corpus file with the manifest hash as it is read.
    """

    def __init__(self, store: str | os.PathLike, version: str, *,
                 transform: Transform | None = None, check_files: bool = True,
                 storage_options: dict | None = None) -> None:
        self.store = os.fspath(store)
        self.storage_options = dict(storage_options or {})
        opened = LabelStore(self.store, storage_options=storage_options).open_version(version)
        self.version_id = opened.version_id
        self.entries: tuple[ManifestEntry, ...] = tuple(
            opened.entry(sample_id) for sample_id in opened.sample_ids)
        self.transform = transform
        self.check_files = check_files
        self._version: LabelVersion | None = None  # opened per process, on first read

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_version": None}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def sample_ids(self) -> list[str]:
        return [entry.sample_id for entry in self.entries]

    @property
    def version(self) -> LabelVersion:
        if self._version is None:
            self._version = LabelVersion(self.store, self.version_id,
                                         storage_options=self.storage_options)
        return self._version

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        if self.check_files:
            check_file_hash(entry.image_path, entry.image_sha256, sample_id=entry.sample_id,
                            version_id=self.version_id)
            check_file_hash(entry.mask_path, entry.mask_sha256, sample_id=entry.sample_id,
                            version_id=self.version_id)
        image = read_image(entry.image_path)
        coarse_mask = read_mask(entry.mask_path, size=image.shape[:2])
        labels = self.version.read(entry.sample_id, include_teacher_alpha=False)
        if labels.shape != image.shape[:2]:
            raise CorpusChanged(f"{entry.image_path} (sample {entry.sample_id!r}) is "
                                f"{image.shape[:2]} (HxW) but its labels in version "
                                f"{self.version_id} are {labels.shape}")
        item = {"image": image_to_tensor(image), "coarse_mask": label_to_tensor(coarse_mask),
                "blended_alpha": _unit_mask(labels.blended_alpha),
                "blended_boundary": _unit_mask(labels.blended_boundary),
                "sample_id": entry.sample_id}
        if self.transform is not None:
            item = self.transform(item)
        return {key: value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor)
                else value for key, value in item.items()}


# --------------------------------------------------------------------------- preview


_CAPTION_COLOUR = (255, 220, 60)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the tile's top-left corner (dark outline, readable on any image)."""
    tile = tile.copy()
    scale = max(0.3, tile.shape[0] / 400)
    origin = (4, 4 + cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1])
    cv2.putText(tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, _CAPTION_COLOUR, 1,
                cv2.LINE_AA)
    return tile


def preview_sample_ids(version: LabelVersion, count: int) -> list[str]:
    """``count`` labelled sample ids spread evenly over the version (all if fewer)."""
    ids = version.sample_ids
    if count >= len(ids):
        return list(ids)
    return [ids[i * len(ids) // count] for i in range(count)]


def preview_version(store: str | os.PathLike, version: str, out: str | os.PathLike, *,
                    count: int = 8, height: int = 160) -> Path:
    """A PNG grid, one row per sample: image | teacher | blended alpha | coarse mask.

    The teacher column is the teacher's alpha when the version stores it
    (``store_teacher_alpha``); otherwise the blended boundary stands in and is captioned
    "blended boundary" on every row. Rows are labelled with the sample id. Returns ``out``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    opened = LabelStore(os.fspath(store)).open_version(version)
    teacher_column = "teacher alpha" if opened.has_teacher_alpha else "blended boundary"
    names = ("image", teacher_column, "blended alpha", "coarse mask")
    rows, labels = [], []
    for row, sample_id in enumerate(preview_sample_ids(opened, count)):
        entry = opened.entry(sample_id)
        image = read_image(entry.image_path)
        labels_of = opened.read(sample_id)
        teacher = (labels_of.teacher_alpha if opened.has_teacher_alpha
                   else labels_of.blended_boundary)
        coarse_mask = read_mask(entry.mask_path, size=image.shape[:2])
        tiles = [tile_rgb(tile, height=height)
                 for tile in (image, teacher, labels_of.blended_alpha, coarse_mask)]
        stand_in = not opened.has_teacher_alpha
        tiles = [_caption(tile, name) if row == 0 or (column == 1 and stand_in) else tile
                 for column, (tile, name) in enumerate(zip(tiles, names, strict=True))]
        rows.append(tiles)
        labels.append(sample_id)
    if not rows:
        raise ValueError(f"version {opened.version_id} has no labelled samples to preview")
    return save_grid(rows, out, labels=labels, height=height)
