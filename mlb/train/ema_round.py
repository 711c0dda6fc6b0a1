"""One mean-teacher round of offline MLB (method.md section 1), owned by the library.

    plan  ->  relabel (the student's EMA copy as teacher, a new label version)
          ->  train the next student (from the current student, on the new version)
          ->  evaluate current and new students  ->  promote the new one if not worse

The new version records its lineage (parent version = the one the current student learned
from, and the round number). The new student replaces the ``current`` checkpoint only when
its whole-region MSE on the validation set is not worse; the replaced file is kept next to
the round's outputs, so a promotion can be undone by copying it back. The round's metrics
table is written to ``report.md`` in the round's folder.

The round lives under ``mlb/train`` because a mean teacher is a training scheme: it composes
the label version (``mlb.labels``), a student run and an evaluation, all below it. How each
step executes is the caller's: :func:`run_round` takes the steps as :class:`RoundSteps`, in
this process by default; the ``ema-relabel`` flow passes its Prefect tasks (relabel over
Dask, training and scoring as retried tasks), so the order, lineage, promotion rule and
report exist once, here.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import model_validator

from mlb.checkpoint import CheckpointError, read_checkpoint
from mlb.config import FrozenConfig
from mlb.data.augment import AugmentConfig
from mlb.evaluate import EvaluateRequest, EvaluationReport, evaluate_checkpoint, metrics_table
from mlb.inference import InferenceConfig, nest_inference_fields
from mlb.labels.metadata import LabelVersionMetadata
from mlb.labels.relabel import relabel
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.labels.store import LabelStore, VersionNotFound
from mlb.losses import LossConfig
from mlb.models import ModelConfig
from mlb.train.config import PathText, StudentRequest, TrainConfig, TrainSummary
from mlb.train.student import train_student

PROMOTION_METRIC = "mse"  # whole-region MSE (method.md section 3)


class EmaRoundRequest(FrozenConfig):
    """One mean-teacher round: the current student, the corpus, validation set and settings."""

    student: PathText
    """The current student checkpoint; its EMA copy is this round's teacher, and a better
    new student replaces this file."""
    images: PathText
    masks: PathText
    store: PathText
    validation_images: PathText
    validation_alphas: PathText
    work: PathText
    """Round outputs go to ``<work>/<new version id>/``: ``student.pt``, ``report.md`` and,
    after a promotion, ``previous-student.pt``."""
    train: TrainConfig
    relabel: RelabelConfig = RelabelConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    strong_augment: bool = True
    inference: InferenceConfig = InferenceConfig()
    """How both students are run when they are scored (the relabel has its own, in
    ``relabel.inference``)."""

    _flat_inference = model_validator(mode="before")(nest_inference_fields)


class RoundPlan(FrozenConfig):
    """What the current student says about the round: its lineage and architecture."""

    ema_round: int
    parent_version: str | None
    model: ModelConfig


class EmaRound(FrozenConfig):
    """The outcome of a round."""

    ema_round: int
    version_id: str
    parent_version: str | None
    student: str
    """The round's new student checkpoint."""
    current_metric: float
    new_metric: float
    promoted: bool
    report: str
    """``report.md``: the metrics table and the decision."""


def plan_round(request: EmaRoundRequest) -> RoundPlan:
    """Read the current student; fail before any work when it has no EMA copy."""
    checkpoint = read_checkpoint(request.student)
    if checkpoint.ema_state_dict is None:  # checked here, before a whole relabel is spent
        raise CheckpointError(f"{request.student} has no EMA weights to relabel with; train "
                              "the student with an EMA copy (StudentRequest.ema=True)")
    return RoundPlan(ema_round=_parent_round(request.store, checkpoint.label_version) + 1,
                     parent_version=checkpoint.label_version, model=checkpoint.model_config)


def promote(new: str, current: str, backup: str) -> None:
    """Keep ``current`` as ``backup``, then replace it with ``new`` atomically."""
    shutil.copy2(current, backup)
    partial = f"{current}.partial"
    shutil.copy2(new, partial)
    os.replace(partial, current)  # readers see the old file or the new one, never a torn one


def _relabel_here(request: RelabelRequest) -> str:
    return relabel(request, progress=False).version_id


def _train_here(request: StudentRequest) -> TrainSummary:
    return train_student(request, resume=True, progress=False)


def _evaluate_here(request: EvaluateRequest) -> EvaluationReport:
    return evaluate_checkpoint(request, progress=False)


@dataclass(frozen=True)
class RoundSteps:
    """How each step of a round runs; the defaults run it in this process."""

    plan: Callable[[EmaRoundRequest], RoundPlan] = plan_round
    relabel: Callable[[RelabelRequest], str] = _relabel_here
    """Labels the corpus into a version; returns its id."""
    train: Callable[[StudentRequest], TrainSummary] = _train_here
    evaluate: Callable[[EvaluateRequest], EvaluationReport] = _evaluate_here
    promote: Callable[[str, str, str], None] = promote


def run_round(request: EmaRoundRequest, steps: RoundSteps = RoundSteps()) -> EmaRound:
    """One mean-teacher round; the new student is promoted only if it is not worse."""
    plan = steps.plan(request)
    version_id = steps.relabel(RelabelRequest(
        teacher=request.student, weights="ema", images=request.images, masks=request.masks,
        store=request.store, parent_version=plan.parent_version, ema_round=plan.ema_round,
        config=request.relabel))
    folder = Path(request.work) / version_id
    trained = steps.train(StudentRequest(
        store=request.store, labels=version_id, model=plan.model, out=str(folder / "student.pt"),
        init=request.student, train=request.train, loss=request.loss, augment=request.augment,
        strong_augment=request.strong_augment, ema=True))
    current, new = (steps.evaluate(EvaluateRequest(
        model=model, images=request.validation_images, alphas=request.validation_alphas,
        inference=request.inference)) for model in (request.student, trained.checkpoint))
    current_metric, new_metric = _promotion_metric(current), _promotion_metric(new)
    better = is_not_worse(new_metric, current_metric)
    if better:
        steps.promote(trained.checkpoint, request.student, str(folder / "previous-student.pt"))
    markdown = round_markdown(plan, version_id, current.mean, new.mean, promoted=better,
                              short_side=request.inference.short_side)
    report = folder / "report.md"
    report.write_text(markdown)
    return EmaRound(ema_round=plan.ema_round, version_id=version_id,
                    parent_version=plan.parent_version, student=trained.checkpoint,
                    current_metric=current_metric, new_metric=new_metric, promoted=better,
                    report=str(report))


def _promotion_metric(report: EvaluationReport) -> float:
    """The report's mean of the promotion metric; NaN when nothing was scored (a report
    read back from JSON holds None there)."""
    value = report.mean.get(PROMOTION_METRIC)
    return math.nan if value is None else value


def _parent_round(store: str, parent_version: str | None) -> int:
    """The EMA round of the version the student learned from (0: none, or another store)."""
    if parent_version is None:
        return 0
    try:
        metadata = LabelStore(store).open_version(parent_version).metadata
    except VersionNotFound:
        return 0
    return LabelVersionMetadata.parse(metadata).lineage.ema_round


def is_not_worse(new: float, current: float) -> bool:
    """Promotion rule on a lower-is-better metric; NaN (nothing scored) never promotes."""
    return not (math.isnan(new) or math.isnan(current)) and new <= current


def round_markdown(plan: RoundPlan, version_id: str, current: dict[str, float],
                   new: dict[str, float], *, promoted: bool, short_side: int) -> str:
    """The round's metrics table and decision."""
    decision = ("promoted: the new student replaces the current one" if promoted else
                "kept the current student: the new one is worse")
    return (f"# Mean-teacher round {plan.ema_round}\n\n"
            f"- label version `{version_id}` (parent `{plan.parent_version}`)\n"
            f"- decision on whole-region {PROMOTION_METRIC.upper()}: {decision}\n\n"
            + metrics_table({"current student": current,
                             f"round {plan.ema_round} student": new}, short_side=short_side))
