"""Step 1 of MLB: the teacher (method.md section 1).

Optional pre-training on the segmentation corpus (predict the coarse mask, MSE), then
fine-tuning on composites made on the fly (matte foregrounds over the background pool, weak
augmentation) with ``matting_loss`` against the true alpha and its boundary
``1[0.05 < alpha < 0.95]``. The pre-trained checkpoint is kept as ``<out>.pretrain.pt``: it is
the paper's "teacher trained on segmentation only", a row of every comparison.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mlb.checkpoint import load_weights
from mlb.data.augment import AugmentConfig, weak_preset
from mlb.data.corpus import find_matte_samples, find_segmentation_samples
from mlb.data.datasets import CompositeDataset, SegmentationDataset
from mlb.losses import LossConfig, matting_loss
from mlb.models import MattingOutput
from mlb.train.config import DEFAULT_LR, TeacherRequest, TrainSummary
from mlb.train.distributed import joins_process_group
from mlb.train.lineage import run_lineage
from mlb.train.loop import Batch, RunRecord, field_defaults, fit, initial_model

__all__ = [
    "composite_dataset",
    "pretrain_loss",
    "pretrain_path",
    "segmentation_dataset",
    "teacher_loss",
    "train_teacher",
]


# TeacherRequest fields only the fine-tuning stage reads: changing them keeps a finished or
# resumable mask pre-training (the peak rate of pre-training is ``pretrain_lr``).
FINETUNE_ONLY_FIELDS = frozenset({"matte", "loss", "photographic_composites", "train.steps",
                                  "train.lr", "train.ema_momentum"})


def pretrain_path(out: str | Path) -> Path:
    """``runs/teacher.pt`` -> ``runs/teacher.pretrain.pt`` (the segmentation-only teacher)."""
    out = Path(out)
    return out.with_name(out.stem + ".pretrain" + (out.suffix or ".pt"))


def pretrain_loss(prediction: MattingOutput, batch: Batch) -> dict[str, Tensor]:
    """MSE between the predicted alpha and the coarse mask (the paper's pre-training).

    ``prediction.alpha`` and ``batch["coarse_mask"]``: ``(B, 1, H, W)`` in [0, 1]. The
    boundary head is not trained here: a binary mask has no boundary target.
    """
    mse = F.mse_loss(prediction.alpha, batch["coarse_mask"])
    return {"mse": mse, "total": mse}


def teacher_loss(prediction: MattingOutput, batch: Batch, *, loss: LossConfig
                 ) -> dict[str, Tensor]:
    """``matting_loss`` against the true alpha; the boundary target comes from it."""
    return matting_loss(
        prediction.alpha, prediction.boundary_logit, batch["alpha"],
        boundary_weight=loss.boundary_weight, laplacian_levels=loss.laplacian_levels,
        alpha_norm=loss.alpha_norm,
    )


def segmentation_dataset(images: str, masks: str, augment: AugmentConfig) -> Dataset:
    """Natural photos with coarse masks, weakly augmented (unreadable files are skipped)."""
    scan = find_segmentation_samples(images, masks)
    return SegmentationDataset(scan.samples, weak_preset(augment), skip_bad=True)


def composite_dataset(matte: str, augment: AugmentConfig, *, seed: int,
                      photographic: bool = False) -> Dataset:
    """Composites of ``matte/fg`` x ``matte/alpha`` over ``matte/bg``, weakly augmented
    (``photographic``: made by ``photographic_composite``).

    Pairings change every epoch (``CompositeDataset.set_epoch``, called by the sampler).
    """
    root = Path(matte)
    scan = find_matte_samples(root / "fg", root / "alpha", root / "bg")
    return CompositeDataset(scan.samples, scan.backgrounds, weak_preset(augment), seed=seed,
                            skip_bad=True, photographic=photographic)


@joins_process_group
def train_teacher(
    request: TeacherRequest,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Pre-train (if ``request.pretrain_steps``) then fine-tune; checkpoint at ``request.out``.

    ``stop_at_step`` counts over both stages (pre-training steps first). Returns the summary
    of the stage that ran last: the fine-tuning one once the teacher is done.
    """
    # The matte corpus is scanned first: a bad folder fails now, not after pre-training.
    dataset = composite_dataset(request.matte, request.augment, seed=request.train.seed,
                                photographic=request.photographic_composites)
    model = initial_model(request)
    record = request.model_dump(mode="json")
    init = request.init  # what the fine-tuning starts from: after pre-training, its checkpoint
    if request.pretrain_steps > 0:
        summary = _pretrain(model, request, record, resume=resume, overwrite=overwrite,
                            stop_at_step=stop_at_step, progress=progress)
        if not summary.finished or (stop_at_step is not None
                                    and stop_at_step <= request.pretrain_steps):
            return summary
        load_weights(model, summary.checkpoint, model_config=request.model)
        init = summary.checkpoint
    if stop_at_step is not None:
        stop_at_step = max(0, stop_at_step - request.pretrain_steps)
    run = RunRecord(out=Path(request.out), kind="teacher", model_config=request.model,
                    request=record, lr=request.train.lr or DEFAULT_LR["teacher"],
                    ema_momentum=request.train.ema_momentum,
                    request_defaults=field_defaults(type(request)),
                    lineage=run_lineage(init=init))

    def loss_function(prediction: MattingOutput, batch: Batch) -> dict[str, Tensor]:
        return teacher_loss(prediction, batch, loss=request.loss)

    return fit(model, dataset, loss_function, config=request.train, run=run,
               resume=resume, overwrite=overwrite, stop_at_step=stop_at_step,
               progress=progress)


def _pretrain(model: torch.nn.Module, request: TeacherRequest, record: dict, *, resume: bool,
              overwrite: bool, stop_at_step: int | None, progress: bool) -> TrainSummary:
    if request.pretrain_images is None or request.pretrain_masks is None:
        raise ValueError(
            f"pretrain_steps is {request.pretrain_steps} but no segmentation corpus was given "
            f"(pretrain_images={request.pretrain_images!r}, "
            f"pretrain_masks={request.pretrain_masks!r})"
        )
    config = request.train.model_copy(update={"steps": request.pretrain_steps})
    run = RunRecord(out=pretrain_path(request.out), kind="teacher-pretrain",
                    model_config=request.model, request=record,
                    lr=request.pretrain_lr or DEFAULT_LR["teacher-pretrain"],
                    request_defaults=field_defaults(type(request)),
                    lineage=run_lineage(init=request.init), not_compared=FINETUNE_ONLY_FIELDS)
    dataset = segmentation_dataset(request.pretrain_images, request.pretrain_masks,
                                   request.augment)
    return fit(model, dataset, pretrain_loss, config=config, run=run, resume=resume,
               overwrite=overwrite, stop_at_step=stop_at_step, progress=progress)
