"""Tiny corpora, teachers and store helpers shared by the relabel, labels and labelset tests.

Images are small synthetic "portraits" (a bright ellipse on a textured background) of varied
sizes and aspect ratios, so batches mix sizes and the short side is both enlarged and shrunk
at ``short_side=64``. Masks are PNGs; every fifth one is stored at half resolution (a
resizable mask, as some public corpora ship them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from mlb.checkpoint import Checkpoint, save_checkpoint
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.models import ModelConfig, build_model

SIZES = [(40, 56), (72, 50), (64, 64), (37, 61), (96, 80), (50, 90)]
SHORT_SIDE = 64


def make_corpus(root: Path, count: int, *, seed: int = 0) -> tuple[Path, Path]:
    """Write ``count`` images (JPEG) and masks (PNG) named ``p000``...; returns the folders."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        height, width = SIZES[index % len(SIZES)]
        image = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        centre = (int(rng.integers(width // 3, 2 * width // 3)), height // 2)
        axes = (max(2, width // 4), max(2, height // 3))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
        image[mask > 0] = np.clip(image[mask > 0].astype(int) + 120, 0, 255).astype(np.uint8)
        if index % 5 == 4:
            mask = cv2.resize(mask, (width // 2, height // 2), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(images / f"p{index:03d}.jpg"), image[:, :, ::-1])
        cv2.imwrite(str(masks / f"p{index:03d}.png"), mask)
    return images, masks


def make_teacher(path: Path, *, seed: int = 0) -> Path:
    """A randomly initialised ``unet_r18_w05`` saved as an mlb checkpoint."""
    torch.manual_seed(seed)
    model = build_model("unet_r18_w05")
    checkpoint = Checkpoint(model_config=ModelConfig(name="unet_r18_w05"),
                            state_dict=model.state_dict())
    return save_checkpoint(checkpoint, path)


def make_request(teacher: Path, images: Path, masks: Path, store: str | Path,
                 **config: object) -> RelabelRequest:
    settings = {"short_side": SHORT_SIDE, "batch_size": 3, "shard_size": 4,
                "decode_threads": 2, **config}
    return RelabelRequest(teacher=str(teacher), images=str(images), masks=str(masks),
                          store=str(store), config=RelabelConfig(**settings))


def cli_arguments(request: RelabelRequest) -> list[str]:
    """``mlb relabel`` arguments equivalent to ``request`` (soft blend, no band)."""
    config = request.config
    return ["relabel", "--teacher", request.teacher, "--images", request.images,
            "--masks", request.masks, "--store", request.store,
            "--short-side", str(config.inference.short_side),
            "--batch-size", str(config.inference.batch_size),
            "--shard-size", str(config.shard_size), "--decode-threads",
            str(config.decode_threads), "--blend", config.blend.mode, "--quiet"]


def start_cli(arguments: list[str], **kwargs: object) -> subprocess.Popen:
    """The real ``mlb`` entry point in a fresh Python process."""
    command = [sys.executable, "-c", "import sys; from mlb.cli import main; sys.exit(main())",
               *arguments]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)


def store_files(root: Path) -> dict[str, bytes]:
    """Every file under a local store by relative path, except the documented timing file
    (``events.json``) and lock files (``locks/``: each holds its last holder's pid and time)."""
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != "events.json"
            and path.relative_to(root).parts[0] != "locks"}
