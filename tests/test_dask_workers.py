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
