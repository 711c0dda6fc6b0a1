"""The ``relabel`` flow: a teacher labels a corpus into a (new or resumed) label version.

    prepare  ->  relabel-shards x N (Dask, whole shards per task)  ->  publish  ->  report

Each step calls ``mlb.labels.relabel``; tasks pass the request, the version id and shard numbers,
never arrays. The store makes reruns cheap: a rerun after a crash prepares the same version
id, finds the committed shards and labels only the rest; a rerun of a published version
does no work at all.

    prefect deployment run relabel/relabel --params '{"request": {...}}'
"""

from __future__ import annotations

import base64
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import PositiveInt

from flows.runners import (
    DaskConfig,
    RetryPolicy,
    dask_task_runner,
    prepare_workers,
    retry_condition,
    shard_groups,
    shared_api,
    submission_settings,
    with_retries,
)
from mlb.labels.preview import preview_version
from mlb.labels.relabel import prepare_relabel, publish_relabel, relabel_shards, with_scan_of
from mlb.labels.request import RelabelPlan, RelabelRequest, RelabelSummary, ShardStats

PREVIEW_ROWS = 4
PREVIEW_HEIGHT = 96  # px per tile: the PNG stays a few tens of KB inside the artifact
QUARANTINE_LINES = 20  # shown in the summary artifact; the version keeps them all

_TASK_OPTIONS = {"retries": 2, "retry_delay_seconds": 10, "retry_condition_fn": retry_condition,
                 "cache_policy": NO_CACHE}  # the label store is the cache (resumable versions)


@task(name="prepare", **_TASK_OPTIONS)
def prepare(request: RelabelRequest) -> RelabelPlan:
    return prepare_relabel(request)


@task(name="relabel-shards", task_run_name="relabel-shards-{shards}", **_TASK_OPTIONS)
def label_shards(request: RelabelRequest, version_id: str, shards: list[int]) -> ShardStats:
    # The teacher is loaded once per worker process (mlb.labels.relabel caches it), not per task.
    return relabel_shards(request, version_id=version_id, shards=shards)


@task(name="publish", **_TASK_OPTIONS)
def publish(request: RelabelRequest, version_id: str) -> RelabelSummary:
    return publish_relabel(request, version_id=version_id)


@task(name="preview", cache_policy=NO_CACHE)
def preview(store: str, version_id: str) -> str:
    """The version's preview grid (``mlb labels preview``) as markdown for an artifact."""
    with tempfile.TemporaryDirectory() as folder:
        path = preview_version(store, version_id, Path(folder) / "preview.png",
                               count=PREVIEW_ROWS, height=PREVIEW_HEIGHT)
        return preview_markdown(version_id, path.read_bytes())


@flow(name="relabel")
def relabel(request: RelabelRequest, dask: DaskConfig = DaskConfig(),  # noqa: B008
            retry: RetryPolicy = RetryPolicy(), shards_per_task: PositiveInt = 1) -> str:  # noqa: B008
    """Label ``request``'s corpus with its teacher into a label version; returns its id.

    ``dask``: where the shard tasks run (a local cluster by default, ``scheduler_address``
    for a real one, ``gpu`` to ask for GPU workers). ``shards_per_task``: whole shards each
    task labels (more: fewer, longer tasks). ``retry``: retries of transient failures.
    """
    plan = with_retries(prepare, retry)(request)
    started = time.perf_counter()
    stats = label_pending(request, plan, dask=dask, retry=retry, shards_per_task=shards_per_task)
    seconds = time.perf_counter() - started
    summary = with_scan_of(with_retries(publish, retry)(request, plan.version_id), plan)
    create_markdown_artifact(key="relabel-summary", markdown=summary_markdown(
        plan, summary, stats, seconds=seconds, dask=dask),
        description=f"label version {summary.version_id}")
    create_markdown_artifact(key="relabel-preview", markdown=preview(request.store,
                                                                     summary.version_id),
                             description=f"first samples of {summary.version_id}")
    return summary.version_id


def label_pending(request: RelabelRequest, plan: RelabelPlan, *, dask: DaskConfig,
                  retry: RetryPolicy, shards_per_task: int) -> list[ShardStats]:
    """Fan the plan's pending shards out as tasks; a progress artifact follows them."""
    groups = shard_groups(plan.pending_shards, shards_per_task=shards_per_task)
    if not groups:
        return []
    progress_id = create_progress_artifact(
        progress=0.0, key="relabel-progress",
        description=f"{len(plan.pending_shards)} shards of {plan.version_id}")
    shard_task = with_retries(label_shards, retry)
    stats = []
    with shared_api() as api_url, submission_settings(dask), \
            _task_runner(dask, api_url) as runner:
        if not dask.in_process:
            prepare_workers(runner, dask)
        futures = [runner.submit(shard_task, parameters={
            "request": request, "version_id": plan.version_id, "shards": group})
            for group in groups]
        for future in as_completed(futures):
            stats.append(future.result())
            update_progress_artifact(progress_id, progress=100.0 * len(stats) / len(groups))
    return stats


def _task_runner(dask: DaskConfig, api_url: str) -> TaskRunner:
    if dask.in_process:
        return ThreadPoolTaskRunner(max_workers=1)
    return dask_task_runner(dask, api_url=api_url)


def summary_markdown(plan: RelabelPlan, summary: RelabelSummary, stats: Sequence[ShardStats],
                     *, seconds: float, dask: DaskConfig) -> str:
    """The run's counts, throughput and quarantine as a markdown artifact."""
    labelled = sum(item.labelled for item in stats)
    written = sorted(shard for item in stats for shard in item.shards_written)
    where = dask.scheduler_address or ("the flow's process" if dask.in_process
                                       else f"a local cluster of {dask.workers} workers")
    lines = [
        f"# Label version `{summary.version_id}`", "",
        f"- store: `{summary.store}`, corpus `{summary.corpus}`",
        f"- samples in manifest: {plan.samples}; shards: {plan.shard_count} "
        f"({len(written)} written now, {plan.shard_count - len(plan.pending_shards)} "
        f"committed before{', already published' if plan.already_published else ''})",
        "- counts: " + ", ".join(f"{key} {value}" for key, value in sorted(summary.counts.items())),
        f"- labelled now: {labelled} images in {seconds:.1f} s "
        f"({labelled / seconds if seconds > 0 else 0.0:.2f} images/s) on {where}",
    ]
    workers: dict[str, list[ShardStats]] = {}
    for item in stats:
        workers.setdefault(item.process, []).append(item)
    if workers:
        lines += ["", "| process | shard tasks | teachers loaded |", "| --- | --- | --- |"]
        lines += [f"| {process} | {len(items)} | {max(i.teacher_loads for i in items)} |"
                  for process, items in sorted(workers.items())]
    if summary.quarantined:
        lines += ["", f"## Quarantined ({len(summary.quarantined)})", "",
                  "| sample | stage | reason |", "| --- | --- | --- |"]
        lines += [f"| {q.sample_id} | {q.stage} | {q.reason} |"
                  for q in summary.quarantined[:QUARANTINE_LINES]]
    return "\n".join(lines) + "\n"


def preview_markdown(version_id: str, png: bytes) -> str:
    """Markdown embedding ``png`` as a data URI (the Prefect UI shows artifacts, not files)."""
    encoded = base64.b64encode(png).decode()
    return (f"# Preview of `{version_id}`\n\nimage | teacher (or blended boundary) | blended "
            f"alpha | coarse mask\n\n![preview of {version_id}](data:image/png;base64,{encoded})\n")
