"""What the rows measure on: synthetic corpora, untrained checkpoints, cached label versions.

Made once per run under one folder and shared by the rows. Corpora come from
``mlb.data.synth.make_natural_corpus`` (deterministic, fast); networks are freshly initialised
(seed 0): speed and memory do not depend on the weights' values, and no weights can be
downloaded here.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mlb.checkpoint import Checkpoint, save_checkpoint
from mlb.data.synth import make_natural_corpus
from mlb.labels.relabel import relabel
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.models import ModelConfig, build_model_from_config

__all__ = ["Corpus", "LabelSet", "Workspace"]


@dataclass(frozen=True)
class Corpus:
    """A natural-domain corpus: ``images/`` (JPEG) and ``masks/`` (coarse PNG) by stem."""

    root: Path
    count: int
    size: int

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def masks(self) -> Path:
        return self.root / "masks"


@dataclass(frozen=True)
class LabelSet:
    """A published label version of a corpus (the student's cache)."""

    store: Path
    version_id: str
    corpus: Corpus
    teacher: str


class Workspace:
    """Lazily made, reused inputs of the benchmark rows, all under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._scratch = 0

    def corpus(self, *, count: int, size: int, seed: int = 0) -> Corpus:
        """``count`` synthetic photos of ``size`` px with coarse masks (made once)."""
        root = self.root / "corpora" / f"natural-{count}x{size}-seed{seed}"
        if not (root / "synth.json").exists():  # written last: its absence means unfinished
            shutil.rmtree(root, ignore_errors=True)
            make_natural_corpus(root, count=count, size=size, seed=seed, progress=False)
        return Corpus(root, count, size)

    def checkpoint(self, name: str) -> Path:
        """An untrained ``name`` network (seed 0) as an mlb checkpoint (made once)."""
        path = self.root / "checkpoints" / f"{name}.pt"
        if not path.exists():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                config = ModelConfig(name=name)
                model = build_model_from_config(config)
            save_checkpoint(Checkpoint(model_config=config, state_dict=model.state_dict(),
                                       kind="teacher"), path)
        return path

    def scratch(self, name: str) -> Path:
        """A new, empty folder (a fresh label store for each measured relabel)."""
        self._scratch += 1
        path = self.root / "scratch" / f"{self._scratch:03d}-{name}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def label_set(self, corpus: Corpus, *, teacher: str, short_side: int) -> LabelSet:
        """The corpus relabelled by an untrained ``teacher`` (the values do not matter for
        speed), published in a store of its own; made once."""
        store = self.root / "labels" / f"{corpus.root.name}-{teacher}-{short_side}"
        request = RelabelRequest(
            teacher=str(self.checkpoint(teacher)), images=str(corpus.images),
            masks=str(corpus.masks), store=str(store),
            config=RelabelConfig(inference={"short_side": short_side}))
        summary = relabel(request, progress=False)  # a published version is found, not redone
        return LabelSet(store, summary.version_id, corpus, teacher)

