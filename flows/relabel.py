"""The ``relabel`` flow: a teacher labels a corpus into a (new or resumed) label version.

    prepare  ->  relabel-shards x N (Dask, whole shards per task)  ->  publish  ->  report

Each step calls ``mlb.labels.relabel``; tasks pass the request, the version id and shard numbers,
never arrays. The store makes reruns cheap: a rerun after a crash prepares the same version
id, finds the committed shards and labels only the rest; a rerun of a published version
does no work at all.

    prefect deployment run relabel/relabel --params '{"request": {...}}'
"""

from __future__ import annotations

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
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import PositiveInt

from flows.events import emit_published
from flows.paths import data_root
from flows.runlog import artifact_key, flow_run_id, start_run
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
from mlb.labels.store import store_uri

PREVIEW_ROWS = 4
PREVIEW_HEIGHT = 96  # px per tile
PREVIEW_FOLDER = "previews"  # under the data root: <root>/previews/<version id>.png
QUARANTINE_LINES = 20  # shown in the summary artifact; the version keeps them all

_TASK_OPTIONS = {"retries": 2, "retry_delay_seconds": 10, "retry_condition_fn": retry_condition,
                 "cache_policy": NO_CACHE}  # the label store is the cache (resumable versions)


@task(name="prepare", **_TASK_OPTIONS)
def prepare(request: RelabelRequest, run: dict[str, str] | None = None) -> RelabelPlan:
    return prepare_relabel(request, run=run)


@task(name="relabel-shards", task_run_name="relabel-shards-{shards}", **_TASK_OPTIONS)
def label_shards(request: RelabelRequest, version_id: str, shards: list[int]) -> ShardStats:
    # The teacher is loaded once per worker process (mlb.labels.relabel caches it), not per task.
    return relabel_shards(request, version_id=version_id, shards=shards)


@task(name="publish", **_TASK_OPTIONS)
def publish(request: RelabelRequest, version_id: str) -> RelabelSummary:
    return publish_relabel(request, version_id=version_id)


@task(name="preview", cache_policy=NO_CACHE)
def preview(store: str, version_id: str, out: str) -> str:
    """The version's preview grid (``mlb labels preview``) as a PNG file; its path.

    A file, not base64 in the artifact: the API database keeps artifacts forever.
    """
    path = preview_version(store, version_id, out, count=PREVIEW_ROWS, height=PREVIEW_HEIGHT)
    return str(Path(path).resolve())


@flow(name="relabel")
def relabel(request: RelabelRequest, dask: DaskConfig = DaskConfig(),  # noqa: B008
            retry: RetryPolicy = RetryPolicy(), shards_per_task: PositiveInt = 1) -> str:  # noqa: B008
    """Label ``request``'s corpus with its teacher into a label version; returns its id.

    ``dask``: where the shard tasks run (a local cluster by default, ``scheduler_address``
    for a real one, ``gpu`` to ask for GPU workers). ``shards_per_task``: whole shards each
    task labels (more: fewer, longer tasks). ``retry``: retries of transient failures.
    """
    request = start_run(request)
    log = get_run_logger()
    run = {"prefect_flow_run_id": flow_run_id()} if flow_run_id() else None
    plan = with_retries(prepare, retry)(request, run)
    log.info("version %s of corpus %r in %s: %d samples, %d shards, %d to label%s",
             plan.version_id, plan.corpus, store_uri(request.store), plan.samples,
             plan.shard_count, len(plan.pending_shards),
             " (already published: nothing to do)" if plan.already_published else "")
    started = time.perf_counter()
    stats = label_pending(request, plan, dask=dask, retry=retry, shards_per_task=shards_per_task)
    seconds = time.perf_counter() - started
    summary = with_scan_of(with_retries(publish, retry)(request, plan.version_id), plan)
    uri = store_uri(request.store)
    log.info("published %s in %s: %s; %d labelled now in %.1f s", summary.version_id, uri,
             ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())),
             sum(item.labelled for item in stats), seconds)
    create_markdown_artifact(key=artifact_key("relabel-summary", summary.version_id),
                             markdown=summary_markdown(plan, summary, stats, seconds=seconds,
                                                       dask=dask),
                             description=f"label version {summary.version_id}")
    root, _ = data_root()
    png = preview(request.store, summary.version_id,
                  str(root / PREVIEW_FOLDER / f"{summary.version_id}.png"))
    create_markdown_artifact(key=artifact_key("relabel-preview", summary.version_id),
                             markdown=preview_markdown(summary.version_id, png, request.store),
                             description=f"first samples of {summary.version_id}")
    if summary.already_published:  # before this run, or by a concurrent one
        log.info("no event: %s was published before this run", summary.version_id)
    else:
        event = emit_published(summary, store=str(Path(request.store).resolve())
                               if "://" not in request.store else request.store,
                               store_uri=uri, flow_run_id=flow_run_id(),
                               ema_round=request.ema_round)
        log.info("event mlb.label-version.published emitted for %s (event id %s)",
                 summary.version_id, event)
    return summary.version_id


def label_pending(request: RelabelRequest, plan: RelabelPlan, *, dask: DaskConfig,
                  retry: RetryPolicy, shards_per_task: int) -> list[ShardStats]:
    """Fan the plan's pending shards out as tasks; a progress artifact follows them."""
    groups = shard_groups(plan.pending_shards, shards_per_task=shards_per_task)
    if not groups:
        return []
    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key("relabel-progress", plan.version_id),
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
            get_run_logger().info("shard task %d/%d done: shards %s, %d labelled on %s",
                                  len(stats), len(groups), stats[-1].shards_written
                                  or stats[-1].shards_skipped, stats[-1].labelled,
                                  stats[-1].process)
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
        f"- store: `{store_uri(summary.store)}`, corpus `{summary.corpus}`",
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


def preview_markdown(version_id: str, png: str, store: str) -> str:
    """Markdown naming the preview file (and the command that makes it again)."""
    return (f"# Preview of `{version_id}`\n\nimage | teacher (or blended boundary) | blended "
            f"alpha | coarse mask, {PREVIEW_ROWS} samples: `{png}`\n\nAgain: `mlb labels "
            f"preview {version_id} --store {store} --out preview.png`\n")
