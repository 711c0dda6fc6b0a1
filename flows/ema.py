"""The ``ema-relabel`` flow: one mean-teacher round of offline MLB (method.md section 1).

    plan  ->  relabel (the student's EMA copy as teacher, a new label version)
          ->  train-student (from the current student, on the new version)
          ->  evaluate current and new students  ->  promote the new one if not worse

The new version records its lineage (parent version = the one the current student learned
from, and the round number). The new student replaces the ``current`` checkpoint only when
its whole-region MSE on the validation set is not worse; the replaced file is kept next to
the round's outputs, so a promotion can be undone by copying it back. The round's metrics
table is a markdown artifact and ``report.md`` in the round's folder.

Scheduled daily at 03:00 UTC by prefect.yaml; docs/operations.md says how to pause it.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.evaluate import evaluate
from flows.relabel import relabel
from flows.runners import DaskConfig, RetryPolicy, retry_condition
from flows.training import train_student
from mlb.checkpoint import CheckpointError, read_checkpoint
from mlb.config import FrozenConfig
from mlb.data.augment import AugmentConfig
from mlb.evaluate import EvaluateRequest, metrics_table
from mlb.labels.metadata import LabelVersionMetadata
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.labels.store import LabelStore, VersionNotFound
from mlb.losses import LossConfig
from mlb.models import ModelConfig
from mlb.train import StudentRequest, TrainConfig
from mlb.train.config import PathText

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
    short_side: int = Field(512, ge=1)
    """Inference short side when scoring both students."""


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


@task(name="plan-round", cache_policy=NO_CACHE)
def plan_round(request: EmaRoundRequest) -> RoundPlan:
    checkpoint = read_checkpoint(request.student)
    if checkpoint.ema_state_dict is None:  # checked here, before a whole relabel is spent
        raise CheckpointError(f"{request.student} has no EMA weights to relabel with; train "
                              "the student with an EMA copy (StudentRequest.ema=True)")
    return RoundPlan(ema_round=_parent_round(request.store, checkpoint.label_version) + 1,
                     parent_version=checkpoint.label_version, model=checkpoint.model_config)


@task(name="promote", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_condition,
      cache_policy=NO_CACHE)
def promote(new: str, current: str, backup: str) -> None:
    """Keep ``current`` as ``backup``, then replace it with ``new`` atomically."""
    shutil.copy2(current, backup)
    partial = f"{current}.partial"
    shutil.copy2(new, partial)
    os.replace(partial, current)  # readers see the old file or the new one, never a torn one


@flow(name="ema-relabel")
def ema_relabel(request: EmaRoundRequest, dask: DaskConfig = DaskConfig(),  # noqa: B008
                retry: RetryPolicy = RetryPolicy()) -> EmaRound:  # noqa: B008
    """One mean-teacher round; the new student is promoted only if it is not worse."""
    plan = plan_round(request)
    version_id = relabel(RelabelRequest(
        teacher=request.student, weights="ema", images=request.images, masks=request.masks,
        store=request.store, parent_version=plan.parent_version, ema_round=plan.ema_round,
        config=request.relabel), dask=dask, retry=retry)
    folder = Path(request.work) / version_id
    trained = train_student(StudentRequest(
        store=request.store, labels=version_id, model=plan.model, out=str(folder / "student.pt"),
        init=request.student, train=request.train, loss=request.loss, augment=request.augment,
        strong_augment=request.strong_augment, ema=True))
    current, new = (evaluate(EvaluateRequest(
        model=model, images=request.validation_images, alphas=request.validation_alphas,
        short_side=request.short_side)) for model in (request.student, trained.checkpoint))
    better = is_not_worse(new.mean[PROMOTION_METRIC], current.mean[PROMOTION_METRIC])
    if better:
        promote(trained.checkpoint, request.student, str(folder / "previous-student.pt"))
    markdown = round_markdown(plan, version_id, current.mean, new.mean, promoted=better,
                              short_side=request.short_side)
    report = folder / "report.md"
    report.write_text(markdown)
    create_markdown_artifact(key="ema-round", markdown=markdown,
                             description=f"mean-teacher round {plan.ema_round}")
    return EmaRound(ema_round=plan.ema_round, version_id=version_id,
                    parent_version=plan.parent_version, student=trained.checkpoint,
                    current_metric=current.mean[PROMOTION_METRIC],
                    new_metric=new.mean[PROMOTION_METRIC], promoted=better, report=str(report))


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
