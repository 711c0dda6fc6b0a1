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

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.runlog import artifact_key, start_run
from flows.runners import retry_condition
from mlb import train as recipes
from mlb.labels.store import store_uri
from mlb.train import DdcRequest, StudentRequest, TeacherRequest, TrainSummary
from mlb.train.launch import LaunchConfig, Recipe, launch_training

Request = TypeVar("Request", TeacherRequest, StudentRequest, DdcRequest)

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
    request = _start(request, lambda r: f"teacher on {r.matte}")
    return _report(fit_teacher(request, resume, overwrite, launch))


@flow(name="train-student")
def train_student(request: StudentRequest, resume: bool = True, overwrite: bool = False,
                  launch: LaunchConfig = LaunchConfig()) -> TrainSummary:  # noqa: B008
    """MLB step 2: the student learns from ``request.labels`` (a version id or ``latest``,
    resolved once and recorded in the checkpoint)."""
    request = _start(request, lambda r: f"student on label version {r.labels!r} of "
                                        f"{store_uri(r.store)}")
    return _report(fit_student(request, resume, overwrite, launch))


@flow(name="train-ddc")
def train_ddc(request: DdcRequest, resume: bool = True, overwrite: bool = False,
              launch: LaunchConfig = LaunchConfig()) -> TrainSummary:  # noqa: B008
    """Matting without alpha labels: known loss + DDC on trimaps from coarse masks."""
    request = _start(request, lambda r: f"DDC on {r.images}")
    return _report(fit_ddc(request, resume, overwrite, launch))


def _start(request: Request, what: Callable[[Request], str]) -> Request:
    """Resolve the request's paths against the data root, then log what is trained (from
    the resolved request: a relative store names the data root's, not this process's)."""
    request = start_run(request)
    get_run_logger().info("training %s: %s, %d steps, batch %d -> %s", what(request),
                          request.model.name, request.train.steps, request.train.batch_size,
                          request.out)
    return request


def _report(summary: TrainSummary) -> TrainSummary:
    get_run_logger().info(
        "%s %s: %d steps (%s), final loss %.5f, %.1f samples/s%s", summary.kind,
        summary.checkpoint, summary.steps, "finished" if summary.finished else "stopped early",
        summary.final_loss, summary.samples_per_second,
        f", label version {summary.label_version}" if summary.label_version else "")
    create_markdown_artifact(key=artifact_key(summary.kind, "summary",
                                              Path(summary.checkpoint).stem),
                             markdown=summary_markdown(summary),
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
    if summary.curve:  # a file, not base64 in the API database
        lines.append(f"- loss curve: `{Path(summary.curve).resolve()}`")
    return "\n".join(lines) + "\n"
