"""The reproduction's two reference points (issue 15): how much of the gap MLB closes.

    oracle        the student's network, from the students' starting point, trained for the
                  students' steps on the natural corpus's *true* alpha with the teacher's
                  loss and the students' strong augmentation: the upper bound, what a student
                  could reach if its labels were perfect (needs the natural corpus's alphas)
    coarse masks  the validation set's coarse masks themselves, scored as a prediction: the
                  lower bound a student must beat (needs the validation set's masks)

Both are scored with the metrics of every other row (method.md section 3).
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from mlb.data.augment import strong_preset
from mlb.data.corpus import find_segmentation_samples, find_validation_samples
from mlb.data.datasets import AlphaDataset
from mlb.data.imageio import read_alpha, read_image, read_mask
from mlb.metrics import METRIC_NAMES, matting_metrics, mean_metrics
from mlb.models import MattingOutput
from mlb.train.config import DEFAULT_LR, PathText, RunRequest, TrainSummary
from mlb.train.loop import Batch, RunRecord, field_defaults, fit, initial_model
from mlb.train.teacher import teacher_loss

__all__ = ["OracleRequest", "oracle_dataset", "score_masks", "train_oracle"]


class OracleRequest(RunRequest):
    """Supervised training on natural photos with their true alpha."""

    images: PathText
    alphas: PathText
    """True alphas, paired with ``images`` by stem, each at its image's size."""


def oracle_dataset(request: OracleRequest) -> Dataset:
    """The natural photos with true alpha, strongly augmented as the students' images are."""
    scan = find_validation_samples(request.images, request.alphas)
    return AlphaDataset(scan.samples, strong_preset(request.augment), skip_bad=True)


def train_oracle(request: OracleRequest, *, resume: bool = False,
                 progress: bool = True) -> TrainSummary:
    """Train the oracle row's model; checkpoint at ``request.out`` (kind ``teacher``: the
    teacher's loss on true alpha, from ``request.init``)."""

    dataset = oracle_dataset(request)
    model = initial_model(request)
    run = RunRecord(out=Path(request.out), kind="teacher", model_config=request.model,
                    request=request.model_dump(mode="json"),
                    lr=request.train.lr or DEFAULT_LR["student"],
                    request_defaults=field_defaults(type(request)))

    def loss_function(prediction: MattingOutput, batch: Batch) -> dict[str, Tensor]:
        return teacher_loss(prediction, batch, loss=request.loss)

    return fit(model, dataset, loss_function, config=request.train, run=run, resume=resume,
               progress=progress)


def score_masks(images: str | Path, masks: str | Path, alphas: str | Path
                ) -> dict[str, float]:
    """Mean metrics of the coarse masks as predictions of the true alphas.

    A mask stored at another resolution is resized (nearest) to its image, as every reader
    of masks does; each alpha must have its image's size. The pure scoring is
    ``matting_metrics``; this reads the files and averages.
    """
    truths = {sample.sample_id: sample.alpha_path
              for sample in find_validation_samples(images, alphas).samples}
    scores = []
    for sample in find_segmentation_samples(images, masks).samples:
        if sample.sample_id not in truths:
            raise ValueError(f"{sample.image_path}: no alpha with stem "
                             f"'{sample.sample_id}' in {alphas}")
        height, width = read_image(sample.image_path).shape[:2]
        mask = read_mask(sample.mask_path, size=(height, width))
        truth = read_alpha(truths[sample.sample_id], size=(height, width))
        scores.append(matting_metrics(mask, truth))
    mean = mean_metrics(scores)
    return {name: mean.get(name, math.nan) for name in METRIC_NAMES}
