"""A contact sheet of a label version (``mlb labels preview``): image, coarse mask and stored
labels side by side for a few samples, captioned, for people to look at."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from mlb.data.imageio import read_image, read_mask
from mlb.data.preview import save_grid, tile_rgb
from storage import LabelStore, LabelVersion

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


def preview_version(store: str | os.PathLike[str], version: str, out: str | os.PathLike[str], *,
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
        teacher = (labels_of.teacher_alpha if labels_of.teacher_alpha is not None
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
    return save_grid(rows, Path(out), labels=labels, height=height)
