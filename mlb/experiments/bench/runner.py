"""Run the benchmark rows of a preset and collect them into one report.

Rows are grouped in families by what they need (one corpus, one set of exports ...); each
family is a function ``(BenchSize, Workspace) -> list[BenchRow]``. A family that fails is
recorded in the report with its error instead of ending the run; the GPU family runs only
where CUDA is available.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mlb.experiments.bench.blend import bench_blend
from mlb.experiments.bench.config import BenchSize
from mlb.experiments.bench.ddc import bench_ddc
from mlb.experiments.bench.distributed import bench_data_parallel
from mlb.experiments.bench.gpu import bench_gpu
from mlb.experiments.bench.memory import bench_memory
from mlb.experiments.bench.networks import bench_networks
from mlb.experiments.bench.relabel import bench_relabel
from mlb.experiments.bench.report import BenchReport, BenchRow, machine_info, now_utc
from mlb.experiments.bench.students import bench_students
from mlb.experiments.bench.training import bench_loader, bench_training
from mlb.experiments.bench.workspace import Workspace

__all__ = ["FAMILIES", "Family", "run_bench"]


@dataclass(frozen=True)
class Family:
    """Rows measured together: ``key`` is the row number in the issue (``"5"`` -> 5a-5e)."""

    key: str
    name: str
    run: Callable[[BenchSize, Workspace], list[BenchRow]]
    needs_cuda: bool = False


FAMILIES: tuple[Family, ...] = (
    Family("1", "relabel pipeline", lambda size, ws: bench_relabel(size.relabel, ws)),
    Family("2", "training from the cache", lambda size, ws: bench_training(size.train, ws)),
    Family("3", "blend kernel", lambda size, ws: bench_blend(size.blend)),
    Family("4", "DDC loss", lambda size, ws: bench_ddc(size.ddc)),
    Family("5", "student inference", lambda size, ws: bench_students(size.onnx, ws)),
    Family("6", "relabel memory", lambda size, ws: bench_memory(size.memory, ws)),
    Family("7", "label-set loader", lambda size, ws: bench_loader(size.loader, ws)),
    Family("8", "GPU", lambda size, ws: bench_gpu(size.gpu, ws), needs_cuda=True),
    Family("9", "data-parallel training",
           lambda size, ws: bench_data_parallel(size.data_parallel, ws)),
    Family("10", "any student network", lambda size, ws: bench_networks(size.networks, ws)),
)
_KEYS = tuple(family.key for family in FAMILIES)


def _selected(rows: Sequence[str] | None) -> list[Family]:
    if rows is None:
        return list(FAMILIES)
    unknown = sorted(set(rows) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown benchmark rows {unknown}; available options are "
                         f"{', '.join(_KEYS)}")
    return [family for family in FAMILIES if family.key in rows]


def _with_load(row: BenchRow) -> BenchRow:
    """The row with the load average at its end: other processes on the machine slow the
    small tensor ops of 2-thread torch far more than large ones (a busy core stalls every
    parallel region), so a loaded machine skews even side-by-side ratios."""
    load = [round(value, 2) for value in os.getloadavg()]
    return row.model_copy(update={"details": {**row.details, "load_average_after": load}})


def run_bench(size: BenchSize, *, rows: Sequence[str] | None = None,
              workdir: str | os.PathLike | None = None, command: str = "",
              progress: bool = False) -> BenchReport:
    """Measure the selected row families (all by default) at ``size``.

    ``workdir`` keeps the corpora, checkpoints, exports and label stores (default: a
    temporary folder, removed afterwards). ``command`` is recorded in the report as given.
    """
    started = time.perf_counter()
    families = _selected(rows)
    machine, date = machine_info(), now_utc()
    results: list[BenchRow] = []
    skipped: dict[str, str] = {}
    with ExitStack() as stack:
        root = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="mlb-bench-"))
        workspace = Workspace(Path(root))
        bar = stack.enter_context(tqdm(families, desc="mlb bench", unit="row",
                                       disable=None if progress else True))
        for family in bar:
            bar.set_postfix_str(family.name)
            if family.needs_cuda and not torch.cuda.is_available():
                skipped[family.key] = "no CUDA device on this machine"
                continue
            try:
                results.extend(_with_load(row) for row in family.run(size, workspace))
            except Exception as error:  # noqa: BLE001 (reported in the results, not lost)
                # One broken row must not discard the others' minutes of measurements.
                skipped[family.key] = f"error: {type(error).__name__}: {error}"
    machine["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    return BenchReport(preset=size.name, command=command, date=date, machine=machine,
                       seconds=time.perf_counter() - started, rows=results, skipped=skipped)
