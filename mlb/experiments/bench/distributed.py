"""Row 9: data-parallel training under torchrun, N processes against one (issue 16).

Both runs are the real ``mlb train student`` recipe started by the same launcher
(:func:`mlb.train.launch.launch_training`, i.e. torchrun) on one cached label version, with
the same per-process batch, so N processes train N x the samples of one per step. Each process
gets ``threads`` threads (``OMP_NUM_THREADS``), so on the CPU the ideal ratio is N when N x
threads cores are free. Samples/s is measured inside the training loop
(``TrainSummary.samples_per_second``): process start-up and rendezvous are left out, the first
steps (allocator warm-up) are in.

What limits it: every step all-reduces the network's gradients (4 bytes a parameter; the
``all_reduce_mib`` detail) and, with ``--sync-bn``, each BatchNorm's statistics; each process
reads and augments its own share of the batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mlb.data.augment import AugmentConfig
from mlb.experiments.bench.config import DataParallelBench
from mlb.experiments.bench.report import BenchRow, Figure
from mlb.experiments.bench.workspace import Workspace
from mlb.models import build_model
from mlb.train.config import StudentRequest, TrainConfig, TrainSummary
from mlb.train.launch import LaunchConfig, launch_training

__all__ = ["all_reduce_mib", "bench_data_parallel"]

CACHE_TEACHER = "unet_r18_w05"


def all_reduce_mib(name: str) -> float:
    """MiB of float32 gradients one data-parallel step of ``name`` all-reduces."""
    model = build_model(name)
    return sum(p.numel() for p in model.parameters() if p.requires_grad) * 4 / 2**20


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """Processes started inside get ``count`` torch threads each."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(count)
    try:
        yield
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


def _train(request: StudentRequest, processes: int, device: str) -> TrainSummary:
    out = request.out.replace(".pt", f"-{device}-{processes}.pt")
    request = request.model_copy(update={"out": out})
    return launch_training("student", request, LaunchConfig(nproc=processes), overwrite=True,
                           on_output=lambda line: None)


def bench_data_parallel(size: DataParallelBench, workspace: Workspace) -> list[BenchRow]:
    """Row 9a (CPU, gloo) and, with two or more GPUs, 9b (NCCL)."""
    corpus = workspace.corpus(count=size.images, size=size.image_size)
    labels = workspace.label_set(corpus, teacher=CACHE_TEACHER, short_side=size.image_size)
    augment = AugmentConfig(short_side=size.image_size, crop_sizes=(size.crop,),
                            output_size=size.crop)
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.device_count() >= size.processes else [])
    for device in devices:
        started = time.perf_counter()
        train = TrainConfig(steps=size.steps, batch_size=size.batch_size, lr=1e-4,
                            warmup_steps=0, device=device, checkpoint_every=0,
                            sync_bn=size.sync_bn)
        request = StudentRequest(store=str(labels.store), labels=labels.version_id,
                                 model=size.student, train=train, augment=augment,
                                 out=str(workspace.scratch("data-parallel") / "student.pt"))
        with _threads(size.threads):
            one = _train(request, 1, device)
            many = _train(request, size.processes, device)
        rows.append(_row(size, device, one, many, time.perf_counter() - started))
    return rows


def _row(size: DataParallelBench, device: str, one: TrainSummary, many: TrainSummary,
         seconds: float) -> BenchRow:
    ratio = many.samples_per_second / one.samples_per_second
    ideal = float(size.processes)
    backend = "gloo" if device == "cpu" else "NCCL"
    return BenchRow(
        id="9a" if device == "cpu" else "9b",
        title=f"Data-parallel training, {size.processes} processes vs 1 ({backend})",
        compared=f"{size.student} student samples/s: {size.processes} processes vs 1",
        figure_a=Figure(name=f"{size.processes} processes", value=many.samples_per_second,
                        unit="samples/s"),
        figure_b=Figure(name="1 process", value=one.samples_per_second, unit="samples/s"),
        ratio=ratio, target=None, passed=None,
        why=(f"no target: the ideal is {ideal:g} (each process on its own "
             f"{size.threads} core(s)); the gap is the all-reduce of "
             f"{all_reduce_mib(size.student):.1f} MiB of gradients a step and per-process "
             "loading"),
        method=(f"mlb.train.launch.launch_training (torchrun, {backend}) of the student "
                f"recipe, {size.steps} steps, batch {size.batch_size} per process, "
                f"{size.crop} px crops, sync_bn={size.sync_bn}, OMP_NUM_THREADS="
                f"{size.threads} per process, on {device}; samples/s from the training loop "
                "(start-up excluded)"),
        details={"ideal": ideal, "all_reduce_mib": round(all_reduce_mib(size.student), 2),
                 "global_batch": {"1": one.global_batch, str(size.processes): many.global_batch},
                 "seconds_in_loop": {"1": round(one.seconds, 2),
                                     str(size.processes): round(many.seconds, 2)}},
        seconds=seconds)
