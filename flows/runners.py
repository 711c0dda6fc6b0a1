"""How flow tasks run: the Dask task runner for shard fan-out, and task retries.

Two measured facts shape this module (docs/environment.md, "Prefect" and "Dask"):

- every Dask worker talks to the Prefect API. Without a server, each worker process would
  start its own temporary API server (measured here: 4 trivial tasks on 2 local workers took
  38 s that way, 6 s with one shared API). A flow run always has an API (a real server, or
  the one temporary server of the flow's own process), so :func:`shared_api` pins that URL in
  the settings the task runner serialises to workers: all report to the flow's API and none
  starts its own. A remote cluster must be able to reach it: use a real server there;
- a task must own whole label-store shards (concurrent writers on one shard lose frames), so
  the unit of work sent to a worker is a group of shards, never a slice of one.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import dask
from distributed import WorkerPlugin
from prefect import Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import TaskRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import State
from prefect_dask import DaskTaskRunner
from pydantic import Field

from mlb.config import FrozenConfig

GPU_RESOURCE = "GPU"  # the name given to `dask worker ADDR --resources GPU=1`



class WorkDirOffPath(WorkerPlugin):
    """Takes a Dask worker's local directory off ``sys.path``, where the worker put it first.

    The worker spills to ``<local directory>/storage``; on ``sys.path`` that folder is a
    namespace package named like this project's ``storage``. With the project installed
    editable (an import hook after every path entry, no plain path entry), ``import storage``
    found the spill folder and every shard task failed to unpickle. Nothing of this project
    is imported from the worker's directory (files sent with ``upload_file`` are imported
    by their path), so the entry goes and spilling stays on.
    """

    name = "mlb-work-dir-off-path"

    def setup(self, worker: Any) -> None:
        while worker.local_directory in sys.path:
            sys.path.remove(worker.local_directory)
        importlib.invalidate_caches()


class TorchThreads(WorkerPlugin):
    """Runs torch on as many threads as the worker was given (``dask worker --nthreads N``).

    Dask starts its workers with ``OMP_NUM_THREADS=1``, so torch used one thread whatever
    ``--nthreads`` said: 6.3 images/s relabelling 290 photos against 20.1 in the flow's own
    process. ``mlb.threads.use_threads`` sets torch's count (and the variables children
    inherit) to the worker's thread count when the plugin is registered.
    """

    name = "mlb-torch-threads"

    def setup(self, worker: Any) -> None:
        from mlb.threads import use_threads  # imports torch: only on the worker

        use_threads(worker.state.nthreads)


def install_worker_plugins(client: Any) -> None:
    """Every worker of ``client``'s cluster, present and later ones: its work directory off
    ``sys.path``, torch on its ``--nthreads`` threads."""
    client.register_plugin(WorkDirOffPath())
    client.register_plugin(TorchThreads())


def prepare_workers(runner: DaskTaskRunner, config: DaskConfig) -> None:
    """Before any shard task: the worker plugins (:func:`install_worker_plugins`); GPU tasks
    find a GPU worker."""
    install_worker_plugins(runner.client)
    check_gpu_workers(runner, config)


LOCAL_NO_WORKERS_TIMEOUT = "60s"


class DaskConfig(FrozenConfig):
    """Where shard tasks run: a local cluster, a remote scheduler, or the flow's process."""

    scheduler_address: str | None = None
    """``tcp://host:8786`` of a running Dask scheduler (a multi-machine cluster); None starts a
    local cluster for the flow run and closes it at the end."""
    workers: int = Field(2, ge=0)
    """Local cluster only: worker processes. 0 runs the shard tasks in the flow's own process
    (no cluster): the cheapest choice for tiny corpora and for debugging."""
    threads_per_worker: int = Field(1, ge=1)
    """Local cluster only. One thread per process: torch parallelises inside a task, and the
    teacher is cached once per process (mlb.labels.relabel)."""
    gpu: bool = False
    """Each shard task asks for one ``GPU`` resource, so it runs only on workers started with
    ``--resources GPU=1`` (local workers then advertise one GPU each)."""

    @property
    def in_process(self) -> bool:
        return self.scheduler_address is None and self.workers == 0


class RetryPolicy(FrozenConfig):
    """Retries of tasks that fail for a transient reason (see :func:`is_transient`)."""

    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(10.0, ge=0.0)


# Errors that say the inputs are wrong: retrying cannot help (architecture.md: user-facing
# errors are ValueError / FileNotFoundError, their subclasses included).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError,
)


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying (I/O, lost workers, CUDA out of memory)."""
    return not isinstance(error, PERMANENT_ERRORS)


def retry_condition(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task only when its error is transient."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, BaseException) or is_transient(error)


def with_retries(task: Task, policy: RetryPolicy) -> Task:
    """``task`` with the flow run's retry policy (tasks declare their own defaults)."""
    return task.with_options(retries=policy.retries,
                             retry_delay_seconds=policy.retry_delay_seconds)


@contextlib.contextmanager
def shared_api() -> Iterator[str]:
    """Pin the flow run's Prefect API URL in the settings workers receive; yields the URL.

    Inside a flow run an API always exists; when it is the process's temporary server,
    ``PREFECT_API_URL`` is unset and each Dask worker would start one of its own.
    """
    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


def dask_task_runner(config: DaskConfig, *, api_url: str | None = None) -> DaskTaskRunner:
    """The task runner of ``config`` (not started: use it as a context manager)."""
    if config.scheduler_address is not None:
        return DaskTaskRunner(address=config.scheduler_address)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": config.workers, "threads_per_worker": config.threads_per_worker,
        "processes": True, "dashboard_address": ":0",  # any free port: never collide
    }
    if api_url:
        cluster_kwargs["env"] = {"PREFECT_API_URL": api_url}
    if config.gpu:
        cluster_kwargs["resources"] = {GPU_RESOURCE: 1}
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)


def check_gpu_workers(runner: DaskTaskRunner, config: DaskConfig) -> None:
    """Fail now, not hang forever, when GPU tasks are asked of a cluster without GPU workers."""
    if not config.gpu:
        return
    workers = runner.client.scheduler_info()["workers"].values()
    if not any(worker.get("resources", {}).get(GPU_RESOURCE) for worker in workers):
        where = config.scheduler_address or "the local cluster"
        raise ValueError(f"gpu=True but no worker of {where} offers the {GPU_RESOURCE!r} "
                         f"resource; start GPU workers with `dask worker ADDRESS "
                         f"--resources {GPU_RESOURCE}=1`")


@contextlib.contextmanager
def submission_settings(config: DaskConfig) -> Iterator[None]:
    """Dask settings while the cluster starts and shard tasks are submitted.

    A local cluster's scheduler fails tasks left without any worker that can run them for
    ``LOCAL_NO_WORKERS_TIMEOUT`` (workers that died at start-up never come back; without it
    the flow would wait forever). With ``gpu``, each task asks for one GPU resource.
    """
    with contextlib.ExitStack() as stack:
        if config.scheduler_address is None and not config.in_process:
            stack.enter_context(dask.config.set(
                {"distributed.scheduler.no-workers-timeout": LOCAL_NO_WORKERS_TIMEOUT}))
        if config.gpu and not config.in_process:
            stack.enter_context(dask.annotate(resources={GPU_RESOURCE: 1}))
        yield


def shard_groups(shards: Sequence[int], *, shards_per_task: int) -> list[list[int]]:
    """Consecutive groups of whole shards, one per task (a shard is never split)."""
    if shards_per_task < 1:
        raise ValueError(f"shards_per_task must be >= 1, got {shards_per_task}")
    shards = list(shards)
    return [shards[i:i + shards_per_task] for i in range(0, len(shards), shards_per_task)]
