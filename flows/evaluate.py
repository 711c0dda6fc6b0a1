"""The ``evaluate`` flow: a checkpoint's metrics on a validation set (method.md section 3),
published as a markdown table artifact.

    prefect deployment run evaluate/evaluate \\
        --params '{"request": {"model": "runs/student.pt", "images": "val/images",
                               "alphas": "val/alphas"}}'
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.runners import retry_condition
from mlb.evaluate import EvaluateRequest, EvaluationReport, evaluate_checkpoint


@task(name="score", retries=1, retry_delay_seconds=10, retry_condition_fn=retry_condition,
      cache_policy=NO_CACHE)
def score(request: EvaluateRequest) -> EvaluationReport:
    return evaluate_checkpoint(request, progress=False)


@flow(name="evaluate")
def evaluate(request: EvaluateRequest) -> EvaluationReport:
    """Score ``request.model`` on ``request.images`` / ``request.alphas``."""
    report = score(request)
    create_markdown_artifact(
        key="evaluation", markdown=f"# `{report.checkpoint}` on {report.images} images\n\n"
        f"{report.table}", description=f"metrics of {report.checkpoint}")
    return report
