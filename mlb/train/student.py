"""Step 2 of MLB: the student learns from a cached blended label version (method.md section 1).

Loss: ``matting_loss`` against ``blended_alpha``, with the band of the labels
``1[0.05 < blended_alpha < 0.95]`` (default) or the cached ``blended_boundary`` as the
boundary target (``StudentRequest.boundary_target`` says why), on strongly augmented images
(geometry applied to image and labels alike, colour to the image only). Optionally
``ddc_weight * (L_known + 10 * L_DDC)`` on the same natural images with trimaps from their
coarse masks, so the two seeds of method.md combine.

Mean teacher (offline form): when the student has the teacher's architecture (the version's
``LabelVersionMetadata.teacher.model``) it keeps an EMA copy, saved as ``ema_state_dict``; the next
round relabels the corpus with it (``mlb relabel --weights ema``). The EMA starts at the
student's initial weights (the ``init`` checkpoint, usually the teacher itself).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from mlb.data.augment import strong_preset, weak_preset
from mlb.labels.dataset import LabelSetDataset
from mlb.labels.metadata import LabelVersionMetadata
from mlb.labels.store import existing_store
from mlb.losses import LossConfig, matting_loss
from mlb.losses import boundary_target as label_band
from mlb.models import MattingOutput
from mlb.train.config import (
    DEFAULT_EMA_MOMENTUM,
    DEFAULT_LR,
    BoundaryTarget,
    StudentRequest,
    TrainSummary,
)
from mlb.train.ddc import TrimapDataset, ddc_loss_terms
from mlb.train.distributed import joins_process_group
from mlb.train.lineage import run_lineage
from mlb.train.loop import Batch, RunRecord, field_defaults, fit, initial_model

__all__ = [
    "student_dataset",
    "student_ema_momentum",
    "student_loss",
    "teacher_model_name",
    "train_student",
]


def _boundary_target(batch: Batch, kind: BoundaryTarget) -> Tensor:
    if kind == "band":
        return label_band(batch["blended_alpha"])
    if kind == "blend":
        return batch["blended_boundary"]
    raise ValueError(f"boundary_target must be 'band' or 'blend', got {kind!r}")


def student_loss(prediction: MattingOutput, batch: Batch, *, loss: LossConfig,
                 ddc_weight: float = 0.0, boundary_target: BoundaryTarget = "band"
                 ) -> dict[str, Tensor]:
    """``matting_loss`` against the blended labels, plus the weighted DDC terms if asked.

    ``boundary_target``: ``"band"`` (the band of ``blended_alpha``) or ``"blend"`` (the
    cached ``blended_boundary``), see ``StudentRequest.boundary_target``.
    ``batch``: ``"blended_alpha"``, ``"blended_boundary"`` ``(B, 1, H, W)`` in [0, 1]; with
    ``ddc_weight > 0`` also ``"image"`` and ``"trimap"``. Returns the named terms of both
    losses (``known``, ``ddc`` unweighted) and ``total``.
    """
    terms = matting_loss(
        prediction.alpha, prediction.boundary_logit, batch["blended_alpha"],
        true_boundary=_boundary_target(batch, boundary_target),
        boundary_weight=loss.boundary_weight,
        laplacian_levels=loss.laplacian_levels, alpha_norm=loss.alpha_norm,
    )
    if ddc_weight > 0:
        ddc = ddc_loss_terms(prediction, batch, loss=loss)
        terms = {**terms, "known": ddc["known"], "ddc": ddc["ddc"],
                 "total": terms["total"] + ddc_weight * ddc["total"]}
    return terms


def student_ema_momentum(request: StudentRequest, teacher_model: str | None) -> float | None:
    """The EMA momentum of this run, or None for no EMA copy.

    ``request.ema`` forces it on or off; left None, an EMA is kept when
    ``train.ema_momentum`` is set or when the teacher (``teacher_model``, its registered
    name) has the student's architecture.
    """
    momentum = request.train.ema_momentum
    momentum = DEFAULT_EMA_MOMENTUM if momentum is None else momentum
    if request.ema is not None:
        return momentum if request.ema else None
    same_architecture = teacher_model == request.model.name
    return momentum if request.train.ema_momentum is not None or same_architecture else None


def student_dataset(request: StudentRequest) -> Dataset:
    """The label version's items, augmented (strong by default), with trimaps if DDC is on."""
    preset = (strong_preset if request.strong_augment else weak_preset)(request.augment)
    dataset = LabelSetDataset(request.store, request.labels, transform=preset)
    if request.ddc_weight > 0:
        return TrimapDataset(dataset, kernel_range=request.trimap_kernel_range)
    return dataset


def teacher_model_name(metadata: dict) -> str | None:
    """The teacher's network name recorded by ``mlb.labels.relabel`` in a version's metadata."""
    return LabelVersionMetadata.parse(metadata).teacher.model_name


@joins_process_group
def train_student(
    request: StudentRequest,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train the student of ``request`` from its label version; checkpoint at ``request.out``.

    ``request.labels = "latest"`` is resolved once, here: the checkpoint records the actual
    version id (``label_version``), and a resumed run must find the same one.
    """
    version = existing_store(request.store).open_version(request.labels)
    request = request.model_copy(update={"labels": version.version_id})
    dataset = student_dataset(request)
    model = initial_model(request)
    teacher_model = teacher_model_name(version.metadata)
    lineage = run_lineage(init=request.init, store=request.store, version=version)
    run = RunRecord(out=Path(request.out), kind="student", model_config=request.model,
                    request=request.model_dump(mode="json"),
                    lr=request.train.lr or DEFAULT_LR["student"], label_version=version.version_id,
                    ema_momentum=student_ema_momentum(request, teacher_model),
                    request_defaults=field_defaults(type(request)),
                    lineage=lineage)

    def loss_function(prediction: MattingOutput, batch: Batch) -> dict[str, Tensor]:
        return student_loss(prediction, batch, loss=request.loss, ddc_weight=request.ddc_weight,
                            boundary_target=request.boundary_target)

    return fit(model, dataset, loss_function, config=request.train, run=run,
               resume=resume, overwrite=overwrite, stop_at_step=stop_at_step,
               progress=progress)
