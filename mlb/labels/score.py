"""How good is a label version? Its labels scored against true alpha, where some exists.

A natural corpus has coarse masks only, but a user often holds true alpha for a few of its
photos, and the built-in benchmark has it for all of them. Scoring the cached labels there
answers the questions a student's result raises: are the blended labels better than the
masks they replace, and where does the blend take the teacher (``blended_boundary``, the
blend weight ``b`` of method.md section 1) compared with the true boundary region?

For every sample whose image stem has a file in ``alphas``, at the truth's resolution (the
labels are stored at the image's size; the truth is resized to it if stored at another):

- ``blended_alpha``, the coarse mask and, when the version stores it, ``teacher_alpha``:
  MSE / SAD / MAD over the whole image and over the boundary region ``0.05 < gt < 0.95``
  (the scales of :mod:`mlb.metrics`);
- the mean blend weight inside the true boundary region and outside it.

Samples without a true alpha are counted, not scored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlb.config import FrozenConfig
from mlb.data.corpus import list_images
from mlb.data.imageio import read_alpha, read_mask
from mlb.metrics import boundary_region, mean_metrics, region_metrics
from storage import LabelStore

__all__ = ["LABEL_COLUMNS", "LabelScore", "label_score_table", "score_label_version"]

LABEL_COLUMNS: dict[str, str] = {
    "mse": "whole MSE",
    "mse_boundary": "boundary MSE",
    "sad": "whole SAD",
    "sad_boundary": "boundary SAD",
}
_ROWS = {"coarse_mask": "coarse mask", "teacher_alpha": "teacher alpha (stored)",
         "blended_alpha": "blended alpha"}


class LabelScore(FrozenConfig):
    """Mean scores of one label version against true alpha."""

    version_id: str
    scored: int
    """Samples with a true alpha, scored."""
    unscored: int
    """Samples of the version without a true alpha in the folder."""
    mean: dict[str, dict[str, float]]
    """``coarse_mask`` / ``blended_alpha`` (/ ``teacher_alpha``) -> metric -> mean."""
    blend_weight: dict[str, float]
    """Mean ``blended_boundary`` inside (``boundary``) and outside (``elsewhere``) the true
    boundary region."""
    table: str


def _weights(stored: np.ndarray, band: np.ndarray) -> dict[str, float]:
    """Mean blend weight (stored as uint8 0..255) inside and outside ``band``."""
    weight = stored.astype(np.float32) / 255.0
    return {"boundary": float(weight[band].mean()) if band.any() else math.nan,
            "elsewhere": float(weight[~band].mean()) if (~band).any() else math.nan}


def score_label_version(store: str | os.PathLike[str], version: str,
                        alphas: str | os.PathLike[str], *, progress: bool = True) -> LabelScore:
    """Score ``version`` of ``store`` against the true alphas in folder ``alphas``.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when no sample of
    the version has a true alpha there (naming both).
    """
    folder = Path(alphas)
    if not folder.is_dir():
        raise FileNotFoundError(f"true-alpha folder {folder} does not exist")
    truths = {path.stem: path for path in list_images(folder)}
    opened = LabelStore(os.fspath(store)).open_version(version)
    per_row: dict[str, list[dict[str, float]]] = {}
    weights: list[dict[str, float]] = []
    unscored = 0
    for sample_id in tqdm(opened.sample_ids, desc="score labels", unit="img",
                          disable=None if progress else True):
        entry = opened.entry(sample_id)
        truth_path = truths.get(Path(entry.image_path).stem)
        if truth_path is None:
            unscored += 1
            continue
        labels = opened.read(sample_id)
        truth = read_alpha(truth_path, size=labels.shape)
        candidates = {"coarse_mask": read_mask(entry.mask_path, size=labels.shape),
                      "teacher_alpha": labels.teacher_alpha,
                      "blended_alpha": labels.blended_alpha}
        for row, values in candidates.items():
            if values is not None:
                per_row.setdefault(row, []).append(region_metrics(values, truth))
        weights.append(_weights(labels.blended_boundary, boundary_region(truth)))
    if not weights:
        raise ValueError(f"no sample of label version {opened.version_id} has a true alpha in "
                         f"{folder} (alphas are matched to images by file stem)")
    mean = {row: mean_metrics(scores) for row, scores in per_row.items()}
    blend_weight = mean_metrics(weights)
    return LabelScore(version_id=opened.version_id, scored=len(weights), unscored=unscored,
                      mean=mean, blend_weight=blend_weight,
                      table=label_score_table(mean, blend_weight))


def label_score_table(mean: Mapping[str, Mapping[str, float]],
                      blend_weight: Mapping[str, float]) -> str:
    """Markdown: one row per label kind, then the blend weight inside / outside the band."""
    lines = ["| labels | " + " | ".join(LABEL_COLUMNS.values()) + " |",
             "| --- |" + " --- |" * len(LABEL_COLUMNS)]
    for row, label in _ROWS.items():
        if row in mean:
            cells = [f"{mean[row][key]:.3f}" for key in LABEL_COLUMNS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean blend weight b: {blend_weight['boundary']:.3f} inside the true "
              f"boundary region, {blend_weight['elsewhere']:.3f} elsewhere. MSE x1e3, "
              "SAD / 1000; boundary region: 0.05 < alpha < 0.95."]
    return "\n".join(lines)
