"""A Dask worker that spills keeps importing this project's ``storage``.

A worker spills to ``<local directory>/storage`` and puts that directory first on
``sys.path``; ``flows.runners.WorkDirOffPath`` takes it off. Checked on a real LocalCluster
whose worker has spilled a result to disk, resolving ``storage`` the way an editable install
does (no project folder on ``sys.path``, only the install's import hook).
"""

from __future__ import annotations

import os
import sys

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_worker

from flows.runners import WorkDirOffPath

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _big(_: int) -> np.ndarray:
    return np.ones(4_000_000)  # 32 MB: over the spill threshold below


def _where_storage_resolves() -> dict:
    """In the worker: did it spill, is its directory on sys.path, what is ``storage``?"""
    import importlib.util

    local = get_worker().local_directory
    spill = os.path.join(local, "storage")
    project = {ROOT, os.path.dirname(ROOT), "", "."}
    saved = list(sys.path)
    sys.path[:] = [entry for entry in sys.path
                   if os.path.abspath(entry or ".") not in project]  # as an editable install
    sys.modules.pop("storage", None)
    try:
        spec = importlib.util.find_spec("storage")
    finally:
        sys.path[:] = saved
    return {"spilled": os.path.isdir(spill) and bool(os.listdir(spill)),
            "on_path": local in sys.path,
            "regular_package": spec is not None and spec.origin is not None
            and spec.origin.endswith("__init__.py")}


@pytest.mark.parametrize("plugin", [True, False])
def test_a_spilling_worker_imports_the_projects_storage_only_with_the_plugin(plugin):
    editable = any("Editable" in getattr(finder, "__name__", type(finder).__name__)
                   for finder in sys.meta_path)
    if not editable:
        pytest.skip("the project is not installed editable here")
    with dask.config.set({"distributed.worker.memory.target": 0.01,
                          "distributed.worker.memory.spill": 0.02}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                         memory_limit="1GiB", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        if plugin:
            client.register_plugin(WorkDirOffPath())
        kept = client.map(_big, range(2))  # held: the worker spills them to disk
        client.gather(kept)
        found = client.submit(_where_storage_resolves, pure=False).result()
    assert found["spilled"], found
    assert found["on_path"] is not plugin
    assert found["regular_package"] is plugin, found


# --------------------------------------------------------------------------- torch threads


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torch_threads() -> dict:
    """In a task: the threads torch uses, and what a child process would inherit."""
    import torch

    return {"torch": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "worker_nthreads": get_worker().state.nthreads}


@pytest.fixture()
def external_cluster(tmp_path):
    """A real ``dask scheduler`` and a way to add real ``dask worker`` processes to it."""
    import shutil
    import subprocess
    import time

    dask_cli = os.path.join(os.path.dirname(sys.executable), "dask")
    if not os.path.exists(dask_cli):
        dask_cli = shutil.which("dask")
    port = _free_port()
    # The workers import this project and this test module (the task functions live here).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
    processes: list[subprocess.Popen] = []

    def start(*args: str) -> None:
        log = open(tmp_path / f"dask-{len(processes)}.log", "w")  # noqa: SIM115 (kept open)
        processes.append(subprocess.Popen([dask_cli, *args], env=env, cwd=tmp_path, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))

    start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0")
    address = f"tcp://127.0.0.1:{port}"

    def add_worker(nthreads: int) -> None:
        start("worker", address, "--nthreads", str(nthreads), "--nworkers", "1",
              "--dashboard-address", ":0")  # with its nanny, as documented

    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler accepts connections once it listens
            try:
                client = Client(address, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with client:
            yield client, add_worker
    finally:
        for process in processes[::-1]:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _torch_threads_while_busy() -> int:
    """Runs torch, then holds its executor thread a moment (two at once use both threads)."""
    import time

    import torch

    torch.ones(64, 64) @ torch.ones(64, 64)  # OpenMP fixes this thread's count now
    time.sleep(1.5)
    return torch.get_num_threads()


def test_external_dask_workers_run_torch_on_their_nthreads(external_cluster, tmp_path):
    from relabel_corpus import make_corpus, make_request, make_teacher

    from flows.runners import install_worker_plugins
    from mlb.labels.relabel import prepare_relabel, relabel_shards

    client, add_worker = external_cluster
    add_worker(2)
    client.wait_for_workers(1, timeout=120)
    (first,) = client.scheduler_info()["workers"]
    before = client.submit(_torch_threads, pure=False).result()
    # The fault the plugin mends: Dask sets OMP_NUM_THREADS=1 and torch follows it. Both
    # executor threads run torch now, so both keep that count (OpenMP's is per thread).
    assert before == {"torch": 1, "omp": "1", "worker_nthreads": 2}, before
    busy = [client.submit(_torch_threads_while_busy, pure=False, workers=[first])
            for _ in range(2)]
    assert client.gather(busy) == [1, 1]

    install_worker_plugins(client)  # what the relabel flow does before its first shard task
    add_worker(2)  # a worker that joins later gets the plugins too
    client.wait_for_workers(2, timeout=120)
    (later,) = set(client.scheduler_info()["workers"]) - {first}
    # Real shard tasks, two at once on the first worker (both of its threads), one on the
    # later worker: each labels with torch on the worker's 2 threads.
    images, masks = make_corpus(tmp_path / "corpus", 6)
    request = make_request(make_teacher(tmp_path / "teacher.pt"), images, masks,
                           tmp_path / "labels", shard_size=2, batch_size=2, short_side=32)
    plan = prepare_relabel(request)
    assert plan.pending_shards == [0, 1, 2]
    stats = client.gather([client.submit(relabel_shards, request, version_id=plan.version_id,
                                         shards=[shard], pure=False, workers=[worker])
                           for shard, worker in zip(plan.pending_shards, [first, first, later],
                                                    strict=True)])
    assert [item.torch_threads for item in stats] == [2, 2, 2], stats
    assert [item.shards_written for item in stats] == [[0], [1], [2]]
    for worker in (first, later):
        found = client.submit(_torch_threads, pure=False, workers=[worker]).result()
        assert found["omp"] == "2" and found["worker_nthreads"] == 2, found  # for children
