"""Training flows: ``train-teacher``, ``train-student`` (on a pinned label version) and
``train-ddc``, each one task over ``mlb.train``.

A run resumes from the checkpoint at ``request.out`` by default: a retried task, a rerun
after a crash or a rerun of a finished run (which does no work) all continue where the
checkpoint stopped. ``overwrite=True`` starts over.

Data-parallel: ``launch`` (``{"nproc": 2}``; across machines also ``nnodes``,
``rdzv_endpoint``, ``rdzv_id``) starts the run under torchrun as a subprocess, its output
streamed to the run's log; a failed rank fails the run with that rank's error.

    prefect deployment run train-student/train-student \\
        --params '{"request": {"store": "/labels", "labels": "v-0123456789abcdef", ...}}'
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.runners import retry_condition
from mlb import train as recipes
from mlb.train import DdcRequest, StudentRequest, TeacherRequest, TrainSummary
from mlb.train.launch import LaunchConfig, Recipe, launch_training

CURVE_MAX_BYTES = 200_000  # larger loss-curve PNGs are linked by path, not embedded

# One retry: training resumes from its last periodic checkpoint (TrainConfig.checkpoint_every).
_TASK_OPTIONS = {"retries": 1, "retry_delay_seconds": 30, "retry_condition_fn": retry_condition,
                 "cache_policy": NO_CACHE}


def _fit(recipe: Recipe, request: TeacherRequest | StudentRequest | DdcRequest, *,
         resume: bool, overwrite: bool, launch: LaunchConfig) -> TrainSummary:
    """In this process, or under torchrun when ``launch`` asks for more than one."""
    if launch.nproc == 1 and launch.nnodes == 1:
        return recipes.RECIPES[recipe](request, resume=resume, overwrite=overwrite, progress=False)
    return launch_training(recipe, request, launch, resume=resume, overwrite=overwrite,
                           on_output=get_run_logger().info)


@task(name="train-teacher", **_TASK_OPTIONS)
def fit_teacher(request: TeacherRequest, resume: bool, overwrite: bool,
                launch: LaunchConfig) -> TrainSummary:
    return _fit("teacher", request, resume=resume, overwrite=overwrite, launch=launch)


@task(name="train-student", **_TASK_OPTIONS)
def fit_student(request: StudentRequest, resume: bool, overwrite: bool,
                launch: LaunchConfig) -> TrainSummary:
    return _fit("student", request, resume=resume, overwrite=overwrite, launch=launch)


@task(name="train-ddc", **_TASK_OPTIONS)
def fit_ddc(request: DdcRequest, resume: bool, overwrite: bool,
            launch: LaunchConfig) -> TrainSummary:
    return _fit("ddc", request, resume=resume, overwrite=overwrite, launch=launch)


@flow(name="train-teacher")
def train_teacher(request: TeacherRequest, resume: bool = True, overwrite: bool = False,
                  launch: LaunchConfig = LaunchConfig()) -> TrainSummary:  # noqa: B008
    """MLB step 1: (pre-train on masks, then) fine-tune the teacher on composites."""
    return _report(fit_teacher(request, resume, overwrite, launch))


@flow(name="train-student")
def train_student(request: StudentRequest, resume: bool = True, overwrite: bool = False,
                  launch: LaunchConfig = LaunchConfig()) -> TrainSummary:  # noqa: B008
    """MLB step 2: the student learns from ``request.labels`` (a version id or ``latest``,
    resolved once and recorded in the checkpoint)."""
    return _report(fit_student(request, resume, overwrite, launch))


@flow(name="train-ddc")
def train_ddc(request: DdcRequest, resume: bool = True, overwrite: bool = False,
              launch: LaunchConfig = LaunchConfig()) -> TrainSummary:  # noqa: B008
    """Matting without alpha labels: known loss + DDC on trimaps from coarse masks."""
    return _report(fit_ddc(request, resume, overwrite, launch))


def _report(summary: TrainSummary) -> TrainSummary:
    create_markdown_artifact(key=f"{summary.kind}-summary", markdown=summary_markdown(summary),
                             description=f"{summary.kind} checkpoint {summary.checkpoint}")
    return summary


def summary_markdown(summary: TrainSummary) -> str:
    """A training run as markdown: checkpoint, steps, loss, speed and the loss curve."""
    lines = [
        f"# {summary.kind} `{summary.checkpoint}`", "",
        f"- steps: {summary.steps} ({'finished' if summary.finished else 'stopped early'})",
        f"- final loss (recent mean): {summary.final_loss:.5f}",
        f"- this run: {summary.seconds:.1f} s, {summary.samples_per_second:.1f} samples/s"
        + (" (a finished checkpoint was found: no work)" if summary.seconds == 0 else ""),
    ]
    if summary.label_version:
        lines.append(f"- label version: `{summary.label_version}`")
    curve = Path(summary.curve) if summary.curve else None
    if curve is not None and curve.is_file() and curve.stat().st_size <= CURVE_MAX_BYTES:
        encoded = base64.b64encode(curve.read_bytes()).decode()
        lines += ["", f"![loss curve](data:image/png;base64,{encoded})"]
    elif curve is not None:
        lines.append(f"- loss curve: `{curve}`")
    return "\n".join(lines) + "\n"
