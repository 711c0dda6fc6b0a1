"""Image grids for people to look at: samples, labels, predictions side by side.

``save_grid`` is generic; ``save_corpus_preview`` shows the two synthetic domains
(``mlb synth preview``).

Tiles are ``(H, W, 3) uint8`` RGB images or ``(H, W)`` maps (float in [0, 1] or uint8) shown
in gray; every tile is resized to one height, rows are left-aligned on a dark canvas and an
optional label is written to the left of each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mlb.data.compositing import composite
from mlb.data.corpus import find_matte_samples, find_segmentation_samples, find_validation_samples
from mlb.data.imageio import read_alpha, read_image, read_mask, to_uint8, write_png

__all__ = ["corpus_preview_rows", "make_grid", "save_corpus_preview", "save_grid", "tile_rgb"]

_GAP = 4
_CANVAS = 24
_TEXT = (235, 235, 235)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def tile_rgb(tile: np.ndarray, *, height: int) -> np.ndarray:
    """One tile as ``(height, W', 3) uint8`` RGB, aspect ratio kept.

    Accepts ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; float in [0, 1] or uint8.
    """
    tile = np.asarray(tile)
    if tile.ndim == 3 and tile.shape[2] == 1:
        tile = tile[:, :, 0]
    if not (tile.ndim == 2 or (tile.ndim == 3 and tile.shape[2] == 3)) or 0 in tile.shape[:2]:
        raise ValueError(f"tile must be (H, W) or (H, W, 3) and non-empty, got {tile.shape}")
    tile = to_uint8(tile)
    if tile.ndim == 2:
        tile = np.repeat(tile[:, :, None], 3, axis=2)
    width = max(1, round(tile.shape[1] * height / tile.shape[0]))
    interpolation = cv2.INTER_AREA if height < tile.shape[0] else cv2.INTER_NEAREST
    return cv2.resize(tile, (width, height), interpolation=interpolation)


def _label_width(labels: Sequence[str] | None, scale: float) -> int:
    if not labels:
        return 0
    widths = [cv2.getTextSize(label, _FONT, scale, 1)[0][0] for label in labels]
    return max(widths) + 2 * _GAP


def make_grid(rows: Sequence[Sequence[np.ndarray]], *, labels: Sequence[str] | None = None,
              height: int = 160) -> np.ndarray:
    """Lay out ``rows`` of tiles as one ``(H, W, 3) uint8`` image.

    ``labels``: one text per row (or None). ``height``: the height of every tile in px.
    """
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("make_grid needs at least one row and no empty rows")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"got {len(labels)} labels for {len(rows)} rows")
    scale = max(0.35, height / 320)
    tiled = [[tile_rgb(tile, height=height) for tile in row] for row in rows]
    offset = _label_width(labels, scale)
    widths = [sum(tile.shape[1] for tile in row) + _GAP * (len(row) - 1) for row in tiled]
    grid = np.full((len(rows) * (height + _GAP) + _GAP, offset + max(widths) + 2 * _GAP, 3),
                   _CANVAS, dtype=np.uint8)
    for index, row in enumerate(tiled):
        top = _GAP + index * (height + _GAP)
        left = offset + _GAP
        for tile in row:
            grid[top:top + height, left:left + tile.shape[1]] = tile
            left += tile.shape[1] + _GAP
        if labels is not None:
            text_height = cv2.getTextSize(labels[index], _FONT, scale, 1)[0][1]
            baseline = top + (height + text_height) // 2
            cv2.putText(grid, labels[index], (_GAP, baseline), _FONT, scale, _TEXT, 1, cv2.LINE_AA)
    return grid


def save_grid(rows: Sequence[Sequence[np.ndarray]], path: str | Path, *,
              labels: Sequence[str] | None = None, height: int = 160) -> Path:
    """Write :func:`make_grid` of ``rows`` to ``path`` (PNG). Returns the path."""
    return write_png(path, make_grid(rows, labels=labels, height=height))


def corpus_preview_rows(
    *, composite_dir: str | Path | None = None, natural_dir: str | Path | None = None,
    count: int = 6,
) -> tuple[list[list[np.ndarray]], list[str]]:
    """Rows of the first ``count`` samples of a matte corpus (``fg/ alpha/ bg/``, as written
    by ``mlb synth composite``) and of a natural set (``images/ masks/ alphas/``).

    Composite rows: the composite over background ``i`` of the pool, its alpha; natural
    rows: image, coarse mask, true alpha. Read back through the corpus readers, so the
    preview shows what training will see.
    """
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    if composite_dir is not None:
        rows += _composite_rows(Path(composite_dir), count)
        labels += ["composite", "alpha"]
    if natural_dir is not None:
        rows += _natural_rows(Path(natural_dir), count)
        labels += ["natural", "coarse mask", "true alpha"]
    if not rows:
        raise ValueError("nothing to preview: pass a composite and/or a natural folder")
    return rows, labels


def _composite_rows(root: Path, count: int) -> list[list[np.ndarray]]:
    scan = find_matte_samples(root / "fg", root / "alpha", root / "bg")
    if not scan.backgrounds:
        raise ValueError(f"{root / 'bg'}: no backgrounds to composite onto")
    images, alphas = [], []
    for index, sample in enumerate(scan.samples[:count]):
        foreground = read_image(sample.foreground_path)
        alpha = read_alpha(sample.alpha_path, size=foreground.shape[:2])
        background = read_image(scan.backgrounds[index % len(scan.backgrounds)])
        background = cv2.resize(background, foreground.shape[1::-1])
        images.append(composite(foreground, alpha, background))
        alphas.append(alpha)
    return [images, alphas]


def _natural_rows(root: Path, count: int) -> list[list[np.ndarray]]:
    masks = find_segmentation_samples(root / "images", root / "masks").samples[:count]
    alphas = {sample.sample_id: sample for sample in
              find_validation_samples(root / "images", root / "alphas").samples}
    rows: list[list[np.ndarray]] = [[], [], []]
    for sample in masks:
        image = read_image(sample.image_path)
        rows[0].append(image)
        rows[1].append(read_mask(sample.mask_path, size=image.shape[:2]))
        rows[2].append(read_alpha(alphas[sample.sample_id].alpha_path, size=image.shape[:2]))
    return rows


def save_corpus_preview(path: str | Path, *, composite_dir: str | Path | None = None,
                        natural_dir: str | Path | None = None, count: int = 6,
                        height: int = 160) -> Path:
    """Write the :func:`corpus_preview_rows` grid to ``path`` (PNG). Returns the path."""
    rows, labels = corpus_preview_rows(composite_dir=composite_dir, natural_dir=natural_dir,
                                       count=count)
    return save_grid(rows, path, labels=labels, height=height)
