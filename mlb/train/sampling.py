"""Which samples each step sees, and with which random draws: a pure function of (seed, step).

Resuming a run must reach the same weights as an uninterrupted one, with any number of
DataLoader workers. So no RNG state is carried between steps: step ``s`` takes the positions
``s * B ... s * B + B - 1`` of an endless stream of epochs (epoch ``e`` is a permutation of the
dataset drawn from ``(seed, e)``), and each sample's augmentation runs under RNGs seeded from
``(seed, step, slot)``. Restarting at step ``s`` therefore only needs ``s``.

Data-parallel runs (torchrun) split each step's global batch: with ``ranks`` processes of
``batch_size`` samples each, rank ``r`` takes the global slots ``r * B ... r * B + B - 1`` of
a step of ``ranks * B`` samples, with the same seeds. N ranks of batch B therefore see
exactly the samples (and augmentations) one process of batch N x B sees, which is what makes
a distributed run equal to a single-process one, and lets a run resume on another number of
ranks as long as the global batch stays the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["SampleKey", "SeededSamples", "StepSampler", "sample_seed", "seeded_rng"]


class SampleKey(NamedTuple):
    """Where a sample sits in the run: ``step``, ``slot`` in the batch, its ``epoch`` and
    ``index`` in the dataset."""

    step: int
    slot: int
    epoch: int
    index: int


def sample_seed(seed: int, step: int, slot: int) -> int:
    """A 63-bit seed for one sample of one step (numpy's SeedSequence mixes the three)."""
    state = np.random.SeedSequence([seed, step, slot]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, length: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(length)


class StepSampler(Sampler[list[SampleKey]]):
    """Batch sampler: the keys of steps ``start .. stop - 1`` (``batch_size`` keys each).

    ``ranks`` and ``rank``: this process's share of a data-parallel step (module docstring).
    """

    def __init__(self, length: int, *, batch_size: int, seed: int, start: int, stop: int,
                 ranks: int = 1, rank: int = 0) -> None:
        if length < 1:
            raise ValueError(f"cannot sample from an empty dataset (length {length})")
        if not 0 <= rank < ranks:
            raise ValueError(f"rank must be in [0, {ranks}), got {rank}")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start, self.stop = start, stop
        self.global_batch, self.first_slot = ranks * batch_size, rank * batch_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start, self.stop):
            yield [self.key(step, slot) for slot in range(self.batch_size)]

    def key(self, step: int, slot: int) -> SampleKey:
        """The key of this rank's ``slot`` in ``step`` (its slot in the global batch)."""
        slot += self.first_slot
        position = step * self.global_batch + slot
        epoch, offset = divmod(position, self.length)
        index = int(_epoch_order(self.seed, epoch, self.length)[offset])
        return SampleKey(step, slot, epoch, index)


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed torch (CPU), numpy's and Python's global RNGs; restore them afterwards.

    The augmentation presets draw from the global torch RNG (torchvision v2), datasets may
    use numpy or ``random``; restoring keeps the caller's streams untouched.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class SeededSamples(Dataset):
    """Wraps a map-style dataset so that item ``SampleKey`` is reproducible anywhere.

    Datasets with ``set_epoch`` (``CompositeDataset``: new backgrounds per epoch) get the
    key's epoch first, so each worker's copy agrees with every other.
    """

    def __init__(self, dataset: Dataset, *, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Any:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(key.epoch)
        with seeded_rng(sample_seed(self.seed, key.step, key.slot)):
            return self.dataset[key.index]
