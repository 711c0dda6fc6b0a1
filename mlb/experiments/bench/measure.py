"""How the benchmark measures: medians of timed repeats, side by side, and peak memory.

Other processes share the machine, so every comparison runs its two sides in one process,
interleaved (A, B, B, A ...) after untimed warm-up calls, and reports medians: a burst of
load then hits both sides alike. Peak memory is taken in a fresh interpreter per measurement,
as the growth of its peak RSS over the child's own baseline: torch's CPU allocator is
invisible to ``tracemalloc``, and a process's peak never goes down, so two measurements
cannot share one.
"""

from __future__ import annotations

import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlb.experiments.bench.config import Repeats

__all__ = [
    "Timing",
    "interleaved",
    "peak_rss_bytes",
    "round_ratios",
    "run_isolated",
    "synchronize",
    "time_calls",
    "timed",
]


@dataclass(frozen=True)
class Timing:
    """Wall seconds of each timed call; ``median`` is the figure reported."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self) -> dict[str, Any]:
        return {"median_s": round(self.median, 6), "min_s": round(min(self.seconds), 6),
                "max_s": round(max(self.seconds), 6), "repeats": len(self.seconds)}


def synchronize() -> None:
    """Wait for queued CUDA work, so that a timer stops when the work is done."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(function: Callable[[], object]) -> float:
    """Wall seconds of one call (CUDA work included)."""
    synchronize()
    started = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - started


def time_calls(function: Callable[[], object], timing: Repeats) -> Timing:
    """``timing.warmup`` untimed calls, then the seconds of ``timing.repeats`` timed ones."""
    for _ in range(timing.warmup):
        function()
    return Timing(tuple(timed(function) for _ in range(timing.repeats)))


def interleaved(functions: dict[str, Callable[[], object]], timing: Repeats
                ) -> dict[str, Timing]:
    """Time several calls side by side: each warmed up, then one call of each per round.

    Odd rounds run the calls in reverse order (A B, B A, A B ...), so that a drift in the
    machine's load does not favour the one that runs first. ``seconds[i]`` of every result
    belong to round ``i``: per-round ratios compare calls made moments apart.
    """
    for function in functions.values():
        for _ in range(timing.warmup):
            function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(timing.repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            seconds[name].append(timed(functions[name]))
    return {name: Timing(tuple(values)) for name, values in seconds.items()}


def round_ratios(numerator: Timing, denominator: Timing) -> tuple[float, ...]:
    """Per-round ``numerator / denominator`` of two :func:`interleaved` timings."""
    return tuple(a / b for a, b in zip(numerator.seconds, denominator.seconds, strict=True))


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes.

    On Linux, ``VmHWM`` of ``/proc/self/status``: the high-water mark of this program's own
    address space. ``ru_maxrss`` is not used there because the kernel carries it across
    ``exec``: a child started from a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def run_isolated(function: Callable[..., Any], /, **kwargs: Any) -> Any:
    """``function(**kwargs)`` in a fresh Python interpreter; returns its (picklable) result.

    ``function`` must be defined at module level (it is imported by name in the child) and
    measure its own ``peak_rss_bytes`` before and after the work: the child's peak starts at
    its own baseline (imports, inputs). Raises RuntimeError with the child's stderr if it
    fails.
    """
    with tempfile.TemporaryDirectory(prefix="mlb-bench-") as folder:
        result_path = Path(folder) / "result.pickle"
        command = [sys.executable, "-c", _CHILD, function.__module__, function.__qualname__,
                   str(result_path)]
        # The child runs with this process's torch thread count (torch reads it at start).
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        done = subprocess.run(command, input=pickle.dumps(kwargs), capture_output=True,
                              check=False, env=env)
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace").strip().splitlines()[-20:]
            raise RuntimeError(f"{function.__module__}.{function.__qualname__}(**{kwargs}) "
                               f"failed in its own process (exit {done.returncode}):\n"
                               + "\n".join(stderr))
        return pickle.loads(result_path.read_bytes())


# The child: import the function by module and name, call it with the pickled keywords.
_CHILD = """
import importlib, pickle, sys
function = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
result = function(**pickle.loads(sys.stdin.buffer.read()))
with open(sys.argv[3], "wb") as handle:
    pickle.dump(result, handle)
"""
