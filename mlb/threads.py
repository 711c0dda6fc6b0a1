"""The one thread decision: how many CPU threads torch uses in this process.

Every command that runs a network takes ``--threads N`` (``mlb.cli.fields.threads_option``)
and a Dask worker applies its own ``--nthreads`` (``flows.runners.TorchThreads``); both end
here. Why it is needed at all:

- a Dask worker process starts with ``OMP_NUM_THREADS=1`` (Dask sets it for its workers), so
  torch ran on one thread in a ``dask worker --nthreads 2``: 6.3 images/s relabelling the
  290 human-seg photos against 20.1 in the flow's own process (issue 14);
- on a machine shared with other jobs, one thread per process is often faster: busy-waiting
  OpenMP threads thrash when the cores are oversubscribed (``ReproduceConfig.threads``).

The environment variables are set too, so that processes started from this one (DataLoader
workers, torchrun ranks, ONNX Runtime sessions) inherit the same budget.
"""

from __future__ import annotations

import os

__all__ = ["CHOSEN_THREADS", "THREAD_VARIABLES", "follow_process_threads", "use_threads"]

# Read by OpenMP, MKL and OpenBLAS when a process starts: children inherit the choice.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CHOSEN_THREADS = "MLB_TORCH_THREADS"  # this process's choice, as use_threads made it


def use_threads(threads: int) -> int:
    """Run torch's intra-op work on ``threads`` threads in this process and its children.

    Returns the number torch reports afterwards. ValueError naming the value unless it is a
    positive int.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    import torch  # here: the CLI parser imports this module's users without torch

    for name in (*THREAD_VARIABLES, CHOSEN_THREADS):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def follow_process_threads() -> int:
    """Apply this process's choice (:func:`use_threads`) in the calling thread; returns the
    threads torch uses here.

    OpenMP keeps its thread count per thread: a thread that ran torch before ``use_threads``
    was called (a Dask worker's executor thread that ran a task before the worker plugin was
    registered: seen as 1 thread instead of 2 in ``tests/test_dask_workers.py``) keeps its
    old count until it sets one itself. Work that runs in pool threads calls this first.
    """
    import torch

    chosen = os.environ.get(CHOSEN_THREADS, "")
    if chosen.isdigit() and int(chosen) >= 1 and torch.get_num_threads() != int(chosen):
        torch.set_num_threads(int(chosen))
    return torch.get_num_threads()
