"""The ``ema-relabel`` flow: one mean-teacher round of offline MLB (method.md section 1).

    plan  ->  relabel (the student's EMA copy as teacher, a new label version)
          ->  train-student (from the current student, on the new version)
          ->  evaluate current and new students  ->  promote the new one if not worse

The round itself (order, lineage, promotion rule, report) is ``mlb.train.ema_round``; this
flow only says how each step runs: relabel as the Dask-fanned ``relabel`` flow, training and
scoring as their retried tasks, and the round's metrics table as a markdown artifact.

Scheduled daily at 03:00 UTC by prefect.yaml; docs/operations.md says how to pause it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.evaluate import evaluate
from flows.relabel import relabel
from flows.runlog import start_run
from flows.runners import DaskConfig, RetryPolicy, retry_condition
from flows.training import train_student
from mlb.labels.request import RelabelRequest
from mlb.train import ema_round as library
from mlb.train.ema_round import (
    PROMOTION_METRIC,
    EmaRound,
    EmaRoundRequest,
    RoundPlan,
    RoundSteps,
    is_not_worse,
    round_markdown,
)

__all__ = ["PROMOTION_METRIC", "EmaRound", "EmaRoundRequest", "RoundPlan", "ema_relabel",
           "is_not_worse", "round_markdown"]

plan_round = task(name="plan-round", cache_policy=NO_CACHE)(library.plan_round)
promote = task(name="promote", retries=2, retry_delay_seconds=5,
               retry_condition_fn=retry_condition, cache_policy=NO_CACHE)(library.promote)


@flow(name="ema-relabel")
def ema_relabel(request: EmaRoundRequest, dask: DaskConfig = DaskConfig(),  # noqa: B008
                retry: RetryPolicy = RetryPolicy()) -> EmaRound:  # noqa: B008
    """One mean-teacher round; the new student is promoted only if it is not worse."""

    request = start_run(request)  # relative paths: under the data root (flows.paths)

    def relabel_step(labels: RelabelRequest) -> str:
        return relabel(labels, dask=dask, retry=retry)

    result = library.run_round(request, RoundSteps(
        plan=plan_round, relabel=relabel_step, train=train_student,
        evaluate=evaluate, promote=promote))
    create_markdown_artifact(key="ema-round", markdown=Path(result.report).read_text(),
                             description=f"mean-teacher round {result.ema_round}")
    return result
