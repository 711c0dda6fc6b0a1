"""Torch datasets over corpus scans: where numpy arrays become tensors.

Each item is a dict: ``"image"`` ``(3, H, W) float32`` in [0, 1], label maps ``(1, H, W)
float32`` in [0, 1] (``"coarse_mask"`` or ``"alpha"``), and ``"sample_id"``. A ``transform``
(an :mod:`mlb.data.augment` preset) receives the image as ``tv_tensors.Image`` and labels as
``tv_tensors.Mask``, so geometry is applied to all of them identically; items come out as
plain tensors.

Bad files found at read time: with ``skip_bad=False`` (default) :class:`BadSample` propagates;
with ``skip_bad=True`` the dataset records ``(sample_id, path, reason)`` in ``quarantine`` and
returns the next readable sample instead, so one truncated JPEG does not end a long run. Each
DataLoader worker holds its own copy of ``quarantine``; skips are also logged as warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mlb.data.compositing import composite, photographic_composite
from mlb.data.corpus import MatteSample, Quarantined, SegmentationSample, ValidationSample
from mlb.data.imageio import BadSample, read_alpha, read_image, read_mask

__all__ = [
    "AlphaDataset",
    "CompositeDataset",
    "SegmentationDataset",
    "composite",
    "fit_background",
]

logger = logging.getLogger(__name__)

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def image_to_tensor(image: np.ndarray) -> tv_tensors.Image:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` in [0, 1]."""
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
                            .to(torch.float32).div_(255.0))


def label_to_tensor(label: np.ndarray) -> tv_tensors.Mask:
    """``(H, W) float32`` -> ``(1, H, W) float32`` mask."""
    return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None])


def _finish(item: dict[str, Any], transform: Transform | None) -> dict[str, Any]:
    if transform is not None:
        item = transform(item)
    return {key: value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value
            for key, value in item.items()}


class _SkippingDataset(Dataset):
    """Shared read-with-quarantine logic; subclasses implement ``_load(index)``."""

    def __init__(self, samples: Sequence, transform: Transform | None, *, skip_bad: bool) -> None:
        if len(samples) == 0:
            raise ValueError("no samples: the corpus scan found nothing usable")
        self.samples = tuple(samples)
        self.transform = transform
        self.skip_bad = skip_bad
        self.quarantine: list[Quarantined] = []

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.skip_bad:
            return self._load(index)
        # Try the following samples in turn; give up only when every one is bad.
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            try:
                return self._load(position)
            except (BadSample, FileNotFoundError) as error:
                self._record(position, error)
        raise ValueError(f"every sample is unreadable; quarantine: {self.quarantine}")

    def _record(self, position: int, error: Exception) -> None:
        sample_id = self.sample_id(position)
        path = error.path if isinstance(error, BadSample) else Path(str(error.filename))
        reason = error.reason if isinstance(error, BadSample) else str(error)
        if all(entry.path != path for entry in self.quarantine):
            self.quarantine.append(Quarantined(sample_id, path, reason))
            logger.warning("skipping bad sample %s: %s", sample_id, error)

    def sample_id(self, index: int) -> str:
        return self.samples[index].sample_id


class _PhotoDataset(_SkippingDataset):
    """A photo and one label map per sample, read at the photo's size."""

    label_key: str

    def _read_label(self, sample: Any, size: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def _load(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = read_image(sample.image_path)
        label = self._read_label(sample, image.shape[:2])
        item = {"image": image_to_tensor(image), self.label_key: label_to_tensor(label),
                "sample_id": sample.sample_id}
        return _finish(item, self.transform)


class SegmentationDataset(_PhotoDataset):
    """Natural photos with coarse masks: items ``{"image", "coarse_mask", "sample_id"}``.

    The mask is resized (nearest) to its image when stored at another resolution.
    """

    label_key = "coarse_mask"

    def __init__(self, samples: Sequence[SegmentationSample], transform: Transform | None = None,
                 *, skip_bad: bool = False) -> None:
        super().__init__(samples, transform, skip_bad=skip_bad)

    def _read_label(self, sample: SegmentationSample, size: tuple[int, int]) -> np.ndarray:
        return read_mask(sample.mask_path, size=size)


class AlphaDataset(_PhotoDataset):
    """Natural photos with their true alpha: items ``{"image", "alpha", "sample_id"}``.

    The training data of the reproduction's oracle row (a model trained on the natural
    corpus's true alpha, :mod:`mlb.experiments.reproduce_bounds`). Each alpha must have its
    photo's size.
    """

    label_key = "alpha"

    def __init__(self, samples: Sequence[ValidationSample], transform: Transform | None = None,
                 *, skip_bad: bool = False) -> None:
        super().__init__(samples, transform, skip_bad=skip_bad)

    def _read_label(self, sample: ValidationSample, size: tuple[int, int]) -> np.ndarray:
        return read_alpha(sample.alpha_path, size=size)


def fit_background(background: np.ndarray, size: tuple[int, int], *,
                   rng: np.random.Generator) -> np.ndarray:
    """Scale ``background`` to cover ``size = (H, W)`` and crop it at a random position.

    ``(h, w, 3) uint8`` -> ``(H, W, 3) uint8``; the aspect ratio is kept (no stretching).
    """
    height, width = size
    scale = max(height / background.shape[0], width / background.shape[1])
    scaled_h = max(height, round(background.shape[0] * scale))
    scaled_w = max(width, round(background.shape[1] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(background, (scaled_w, scaled_h), interpolation=interpolation)
    top = int(rng.integers(0, scaled_h - height + 1))
    left = int(rng.integers(0, scaled_w - width + 1))
    return scaled[top:top + height, left:left + width]


class CompositeDataset(_SkippingDataset):
    """Matte samples composited onto random backgrounds on the fly: ``{"image", "alpha", ...}``.

    Item ``i`` uses foreground ``i % len(samples)`` and a background drawn (with its crop) from
    ``numpy.random.default_rng((seed, epoch, i))``: the same item is the same composite within
    an epoch, and :meth:`set_epoch` gives new pairings per epoch. ``length`` defaults to the
    number of matte samples (a larger value repeats foregrounds with other backgrounds).
    ``photographic`` makes each composite with :func:`photographic_composite` (defocus, light
    wrap, colour cast, noise, JPEG; drawn from the same generator) instead of the plain rule.
    """

    def __init__(self, samples: Sequence[MatteSample], background_paths: Sequence[str | Path],
                 transform: Transform | None = None, *, length: int | None = None,
                 seed: int = 0, skip_bad: bool = False, photographic: bool = False) -> None:
        super().__init__(samples, transform, skip_bad=skip_bad)
        self.photographic = photographic
        if len(background_paths) == 0:
            raise ValueError("no background images: compositing needs a background pool")
        self.background_paths = tuple(Path(path) for path in background_paths)
        self.length = len(self.samples) if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw new foreground/background pairings for ``epoch``."""
        self.epoch = int(epoch)

    def sample_id(self, index: int) -> str:
        return self.samples[index % len(self.samples)].sample_id

    def _load(self, index: int) -> dict[str, Any]:
        sample = self.samples[index % len(self.samples)]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        background_path = self.background_paths[int(rng.integers(len(self.background_paths)))]
        foreground = read_image(sample.foreground_path)
        alpha = read_alpha(sample.alpha_path, size=foreground.shape[:2])
        background = fit_background(read_image(background_path), alpha.shape, rng=rng)
        image = (photographic_composite(foreground, alpha, background, rng=rng)
                 if self.photographic else composite(foreground, alpha, background))
        item = {"image": image_to_tensor(image),
                "alpha": label_to_tensor(alpha), "sample_id": sample.sample_id}
        return _finish(item, self.transform)
