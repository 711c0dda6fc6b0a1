"""Tiny corpora and checkpoints for the training, evaluation and export tests (CPU, seconds).

Written with the real ``mlb synth`` generators at 48 px, plus one non-square validation image
(so that "scored at the ground truth's resolution" is visible in the numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mlb.checkpoint import Checkpoint, save_checkpoint
from mlb.data.imageio import read_alpha, read_image, write_png
from mlb.data.synth import make_composite_corpus, make_natural_corpus
from mlb.models import ModelConfig, build_model_from_config

MODEL = "unet_r18_w05"
SIZE = 48
# Flags that keep a training CLI run to about a second a step on 2 shared cores.
TINY_TRAIN_FLAGS = [
    "--model", MODEL, "--batch-size", "2", "--crop-size", "32", "--aug-short-side", "48",
    "--lr", "1e-3", "--warmup-steps", "1", "--device", "cpu", "--quiet",
]


@dataclass(frozen=True)
class TinyCorpus:
    matte: Path
    images: Path
    masks: Path
    val_images: Path
    val_alphas: Path


def write_tiny_corpus(root: Path, *, count: int = 4) -> TinyCorpus:
    """Matte corpus (fg/alpha/bg), natural corpus (images/masks) and a validation set."""
    make_composite_corpus(root / "matte", count=count, size=SIZE, seed=1, progress=False)
    make_natural_corpus(root / "natural", count=count, size=SIZE, seed=2, progress=False)
    val = root / "val"
    make_natural_corpus(val, count=2, size=SIZE, seed=3, progress=False)
    # One non-square validation pair: 41 x 30 px, cropped from the first one.
    image = read_image(next((val / "images").iterdir()))
    alpha = read_alpha(next((val / "alphas").iterdir()))
    write_png(val / "images" / "wide.png", image[3:44, 9:39])
    write_png(val / "alphas" / "wide.png", alpha[3:44, 9:39])
    return TinyCorpus(root / "matte", root / "natural" / "images", root / "natural" / "masks",
                      val / "images", val / "alphas")


def write_untrained_checkpoint(path: Path, *, name: str = MODEL, ema: bool = False,
                               seed: int = 0) -> Path:
    """A checkpoint of a freshly initialised network (no training: for IO-level tests)."""
    torch.manual_seed(seed)
    config = ModelConfig(name=name)
    model = build_model_from_config(config)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    return save_checkpoint(
        Checkpoint(model_config=config, state_dict=state, kind="teacher",
                   ema_state_dict=dict(state) if ema else None, step=0), path)
