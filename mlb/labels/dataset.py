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

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mlb.data.datasets import image_to_tensor, label_to_tensor
from mlb.data.imageio import read_image, read_mask
from mlb.labels.store import CorpusChanged, check_file_hash
from storage import LabelStore, LabelVersion, ManifestEntry

__all__ = ["LabelSetDataset"]

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def _unit_mask(values: np.ndarray) -> tv_tensors.Mask:
    """``(H, W) uint8`` 0..255 -> ``(1, H, W) float32`` in [0, 1] as a Mask."""
    return label_to_tensor(values.astype(np.float32) / np.float32(255.0))


class LabelSetDataset(Dataset[dict[str, Any]]):
    """Items of a published label version (see the module docstring for their layout).

    ``store``: local path or fsspec URL; ``version``: an id or ``"latest"``;
    ``transform``: a paired preset called on the item dict; ``check_files``: compare each
    corpus file with the manifest hash as it is read.
    """

    def __init__(self, store: str | os.PathLike[str], version: str, *,
                 transform: Transform | None = None, check_files: bool = True,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.store = os.fspath(store)
        self.storage_options = dict(storage_options or {})
        opened = LabelStore(self.store, storage_options=storage_options).open_version(version)
        self.version_id = opened.version_id
        self.entries: tuple[ManifestEntry, ...] = tuple(
            opened.entry(sample_id) for sample_id in opened.sample_ids)
        self.transform = transform
        self.check_files = check_files
        self._version: LabelVersion | None = None  # opened per process, on first read

    def __getstate__(self) -> dict[str, Any]:
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
            for path, sha in ((entry.image_path, entry.image_sha256),
                              (entry.mask_path, entry.mask_sha256)):
                check_file_hash(path, sha, sample_id=entry.sample_id, version_id=self.version_id,
                                remedy="relabel the corpus or restore the file")
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
