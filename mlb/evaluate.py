"""Scores of a checkpoint on a validation set (method.md section 3), as data, a table and a grid.

Conventions (fixed in method.md section 3, repeated under every table by :func:`conventions`):
each image is predicted with its short side resized to ``short_side`` (512) and the
prediction resized back, then scored at the ground truth's own resolution; scores are averaged
over images. MSE x 1e3, SAD / 1000, MAD x 1e3, Grad and Conn / 1000 over the whole image;
MSE, SAD and MAD also over the boundary region ``0.05 < gt < 0.95``.

The checkpoint file is never modified (its sha256 names the teacher of label versions); the
report goes to the caller, and to a JSON file when asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from tqdm import tqdm

from mlb.checkpoint import load_model
from mlb.config import FrozenConfig
from mlb.data.corpus import ValidationSample, find_validation_samples
from mlb.data.imageio import read_alpha, read_image
from mlb.data.preview import save_grid
from mlb.device import resolve_device
from mlb.inference import InferenceConfig, nest_inference_fields, prepare_model
from mlb.metrics import METRIC_NAMES, matting_metrics, mean_metrics
from mlb.train.config import PathText

__all__ = [
    "COLUMNS",
    "EvaluateRequest",
    "EvaluationReport",
    "ImageScore",
    "conventions",
    "evaluate_checkpoint",
    "metrics_table",
    "score_samples",
]

# Table columns: metric key -> header (whole image first, then the boundary region).
COLUMNS: dict[str, str] = {
    "mse": "MSE",
    "sad": "SAD",
    "mad": "MAD",
    "grad": "Grad",
    "conn": "Conn",
    "mse_boundary": "MSE (boundary)",
    "sad_boundary": "SAD (boundary)",
    "mad_boundary": "MAD (boundary)",
}


class EvaluateRequest(FrozenConfig):
    """What to score: a checkpoint on a folder of images and a folder of true alphas."""

    model: PathText
    """Checkpoint path."""
    images: PathText
    alphas: PathText
    """True alphas, paired with ``images`` by file stem, each at its image's size."""
    weights: Literal["model", "ema"] = "model"
    inference: InferenceConfig = InferenceConfig()
    grid_path: PathText | None = None
    """Write a qualitative grid PNG here: image | prediction | truth | |error| per row."""
    grid_rows: int = Field(8, ge=1)
    """Images shown in the grid (the first ones, in natural order of id)."""
    json_path: PathText | None = None
    """Write the report (``EvaluationReport``) as JSON here."""

    _flat_inference = model_validator(mode="before")(nest_inference_fields)


class ImageScore(FrozenConfig):
    """One image's metrics (boundary ones are None/NaN when the truth has no boundary)."""

    sample_id: str
    metrics: dict[str, float | None]
    """NaN (written null in JSON) for boundary metrics of a truth without boundary pixels."""


class EvaluationReport(FrozenConfig):
    """Per-image and mean metrics of one checkpoint, with the markdown table."""

    checkpoint: str
    weights: str
    kind: str
    label_version: str | None
    short_side: int
    images: int
    per_image: list[ImageScore]
    mean: dict[str, float | None]
    table: str
    """Markdown: one row for this checkpoint, then the conventions line."""
    grid: str | None = None


def conventions(*, short_side: int) -> str:
    """The evaluation conventions, one paragraph, to print under every results table."""
    return (
        f"Conventions: each image's short side resized to {short_side} for inference, the "
        "prediction resized back and scored at the ground truth's resolution, then averaged "
        "over images. MSE x1e3, SAD /1000, MAD x1e3, Grad and Conn /1000 (whole image); "
        "boundary region: pixels with 0.05 < gt < 0.95."
    )


def _cell(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"


def metrics_table(rows: Mapping[str, Mapping[str, float]], *, short_side: int) -> str:
    """Markdown table of mean metrics, one row per model, with the conventions underneath.

    ``rows``: row label (e.g. "student") -> ``mean_metrics`` result. Missing or NaN cells are
    written "n/a".
    """
    header = "| model | " + " | ".join(COLUMNS.values()) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |"
    lines = [header, rule]
    for label, metrics in rows.items():
        cells = " | ".join(_cell(metrics.get(key)) for key in COLUMNS)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines) + "\n\n" + conventions(short_side=short_side) + "\n"


def _chunks(samples: Sequence[ValidationSample], size: int) -> Iterator[list[ValidationSample]]:
    for start in range(0, len(samples), size):
        yield list(samples[start:start + size])


def score_samples(
    model: object,
    samples: Sequence[ValidationSample],
    *,
    inference: InferenceConfig,
    grid_rows: int = 0,
    progress: bool = True,
) -> tuple[list[ImageScore], list[list[np.ndarray]], list[str]]:
    """Predict and score ``samples`` in batches (the model already on its device).

    Returns the per-image scores, and for the first ``grid_rows`` images the grid tiles
    ``[image, prediction, truth, |error|]`` with their ids.
    """
    scores, tiles, labels = [], [], []
    bar = tqdm(total=len(samples), desc="evaluate", unit="img", disable=None if progress else True)
    with bar:
        for chunk in _chunks(samples, inference.batch_size):
            images = [read_image(sample.image_path) for sample in chunk]
            predictions = inference.predict(model, images)
            for sample, image, prediction in zip(chunk, images, predictions, strict=True):
                true_alpha = read_alpha(sample.alpha_path, size=image.shape[:2])
                metrics = matting_metrics(prediction.alpha, true_alpha)
                scores.append(ImageScore(sample_id=sample.sample_id, metrics=metrics))
                if len(tiles) < grid_rows:
                    error = np.abs(prediction.alpha - true_alpha)
                    tiles.append([image, prediction.alpha, true_alpha, error])
                    labels.append(sample.sample_id)
            bar.update(len(chunk))
    return scores, tiles, labels


def evaluate_checkpoint(request: EvaluateRequest, *, progress: bool = True) -> EvaluationReport:
    """Score ``request.model`` on ``request.images`` / ``request.alphas``.

    Raises ``FileNotFoundError`` for missing folders, ``mlb.data.corpus.BadSample`` for an
    image without its alpha (or of another size), ``CheckpointError`` for a bad checkpoint.
    """
    samples = find_validation_samples(request.images, request.alphas).samples
    inference = request.inference
    model, checkpoint = load_model(request.model, weights=request.weights,
                                   device=resolve_device(inference.device))
    model = prepare_model(model, device=inference.device,
                          channels_last=inference.channels_last)
    scores, tiles, labels = score_samples(
        model, samples, inference=inference,
        grid_rows=request.grid_rows if request.grid_path else 0, progress=progress,
    )
    mean = mean_metrics(score.metrics for score in scores)
    mean = {name: mean.get(name, math.nan) for name in METRIC_NAMES}
    label = Path(request.model).stem + ("" if request.weights == "model" else " (EMA)")
    grid = None
    if request.grid_path is not None:
        grid = str(save_grid(tiles, request.grid_path, labels=labels))
    report = EvaluationReport(
        checkpoint=request.model, weights=request.weights, kind=checkpoint.kind,
        label_version=checkpoint.label_version, short_side=inference.short_side,
        images=len(scores), per_image=scores, mean=mean,
        table=metrics_table({label: mean}, short_side=inference.short_side), grid=grid,
    )
    if request.json_path is not None:
        path = Path(request.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.model_dump_json(indent=2) + "\n")
    return report
