"""The ``evaluate`` flow: a checkpoint's metrics on a validation set (method.md section 3),
published as a markdown table artifact.

    prefect deployment run evaluate/evaluate \\
        --params '{"request": {"model": "runs/student.pt", "images": "val/images",
                               "alphas": "val/alphas"}}'
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.runlog import artifact_key, start_run
from flows.runners import retry_condition
from mlb.evaluate import EvaluateRequest, EvaluationReport, evaluate_checkpoint


@task(name="score", retries=1, retry_delay_seconds=10, retry_condition_fn=retry_condition,
      cache_policy=NO_CACHE)
def score(request: EvaluateRequest) -> EvaluationReport:
    return evaluate_checkpoint(request, progress=False)


@flow(name="evaluate")
def evaluate(request: EvaluateRequest) -> EvaluationReport:
    """Score ``request.model`` on ``request.images`` / ``request.alphas``."""
    request = start_run(request)
    report = score(request)
    means = ", ".join(f"{k} {v:.4g}" for k, v in sorted(report.mean.items()) if v is not None)
    get_run_logger().info("%s on %d images of %s: %s", report.checkpoint, report.images,
                          request.images, means)
    create_markdown_artifact(
        key=artifact_key("evaluation", Path(report.checkpoint).stem),
        markdown=f"# `{report.checkpoint}` on {report.images} images\n\n{report.table}",
        description=f"metrics of {report.checkpoint}")
    return report
