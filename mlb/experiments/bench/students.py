"""Row 5: student inference speed with ONNX Runtime on the CPU, and PyTorch eager.

Each network is exported with :func:`mlb.export.export_onnx` (which checks the graph against
PyTorch) and run with :func:`mlb.export.run_onnx` on one session per network, with as many
intra-op threads as torch uses; the same checkpoint runs in PyTorch eager under ``no_grad``.
The three networks are timed in rounds under ONNX Runtime, so the FPS ratios compare frames
run moments apart; eager runs in a block of its own, with fewer calls (it is reported, not
judged). The paper's CPU ratios (method.md section 1, Xeon Gold 5120, ONNX Runtime):
R18-half / R101 = 43.7 / 5.0 = 8.7 and R18 / R101 = 18.7 / 5.0 = 3.7.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mlb.checkpoint import load_model
from mlb.experiments.bench.config import OnnxBench
from mlb.experiments.bench.measure import Timing, interleaved, round_ratios
from mlb.experiments.bench.report import BenchRow, Figure, Target, judge
from mlb.experiments.bench.workspace import Workspace
from mlb.export import ExportReport, export_onnx, onnx_session, run_onnx
from mlb.models import build_model

__all__ = [
    "PAPER_CPU_FPS",
    "PAPER_GPU_FPS",
    "bench_students",
    "exported",
    "model_gflops",
    "onnx_path",
]

# method.md section 1: FPS at 512x512 with ONNX Runtime (Xeon Gold 5120 CPU / V100 GPU).
PAPER_CPU_FPS = {"unet_r101": 5.0, "unet_r18": 18.7, "unet_r18_w05": 43.7}
PAPER_GPU_FPS = {"unet_r101": 58.3, "unet_r18": 222.2, "unet_r18_w05": 328.9}
_PAPER_RATIO_TARGETS = {"unet_r18_w05": 8.7, "unet_r18": 3.7}


def exported(workspace: Workspace, name: str) -> ExportReport:
    """``name``'s untrained checkpoint exported to ONNX under the workspace (checked)."""
    return export_onnx(workspace.checkpoint(name), onnx_path(workspace, name))


def model_gflops(name: str, size: int) -> float:
    """Forward GFLOP of ``name`` on one ``size`` x ``size`` frame (counted on the meta
    device: shapes only, no arithmetic, under a second even for ResNet-101)."""
    with torch.device("meta"):
        model = build_model(name).eval()
        image = torch.empty(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image)
    return counter.get_total_flops() / 1e9


def bench_students(size: OnnxBench, workspace: Workspace) -> list[BenchRow]:
    """FPS ratios against the largest network (5a, 5b) and ONNX Runtime vs eager (5c-5e)."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    image = torch.rand(1, 3, size.size, size.size, generator=torch.Generator().manual_seed(0))
    pixels = image.numpy()
    ort_calls, eager_calls, exports = {}, {}, {}
    for name in size.models:
        exports[name] = exported(workspace, name)
        session = onnx_session(exports[name].path, threads=threads)
        model, _ = load_model(workspace.checkpoint(name), device="cpu")
        ort_calls[name] = lambda session=session: run_onnx(session, pixels)
        eager_calls[name] = lambda model=model: _eager(model, image)
    ort = interleaved(ort_calls, size.timing)
    eager = interleaved(eager_calls, size.eager_timing)
    gflops = {name: model_gflops(name, size.size) for name in size.models}
    seconds = time.perf_counter() - started
    method = (f"One {size.size}x{size.size} frame (batch 1), untrained weights, on the CPU. "
              f"ONNX Runtime: opset-17 export checked against PyTorch, {threads} intra-op "
              f"threads; {size.timing.warmup} warm-up calls each, then {size.timing.repeats} "
              "rounds over the three networks in alternating order; FPS from median times, "
              "ratios the median of per-round ratios. PyTorch eager (no_grad, "
              f"{threads} threads): {size.eager_timing.warmup} warm-up and "
              f"{size.eager_timing.repeats} timed calls each, in a block of its own.")
    details = {"ort_fps": {name: 1.0 / timing.median for name, timing in ort.items()},
               "eager_fps": {name: 1.0 / timing.median for name, timing in eager.items()},
               "gflop_per_frame": {name: round(value, 1) for name, value in gflops.items()},
               "ort_gflop_per_s": {name: round(gflops[name] / ort[name].median, 1)
                                   for name in size.models},
               "paper_cpu_fps": PAPER_CPU_FPS,
               "export_max_abs_diff": {name: report.max_abs_diff
                                       for name, report in exports.items()}}
    largest = size.models[-1]
    rows = [_ratio_row(f"5{letter}", name, largest, ort, gflops, method, details, seconds)
            for letter, name in zip("ab", size.models[:2], strict=True)]
    rows += [_runtime_row(f"5{letter}", name, ort[name], eager[name], method, seconds)
             for letter, name in zip("cde", size.models, strict=True)]
    return rows


def _eager(model: torch.nn.Module, image: torch.Tensor) -> None:
    with torch.no_grad():
        model(image)


def _ratio_row(row_id: str, name: str, largest: str, ort: dict[str, Timing],
               gflops: dict[str, float], method: str, details: dict, seconds: float
               ) -> BenchRow:
    small, large = ort[name], ort[largest]
    ratio = statistics.median(round_ratios(large, small))  # FPS ratio = inverse time ratio
    target = Target(op=">=", value=_PAPER_RATIO_TARGETS.get(name, 1.0))
    passed = judge(ratio, target)
    flop_ratio = gflops[largest] / gflops[name]
    efficiency = {key: gflops[key] / ort[key].median for key in (name, largest)}
    if passed:
        why = None
    elif flop_ratio < target.value:
        needed = target.value / flop_ratio - 1.0
        why = (f"bounded by this architecture: {largest} needs {gflops[largest]:.0f} GFLOP per "
               f"frame and {name} {gflops[name]:.0f}, a ratio of {flop_ratio:.2f}; "
               f"{target.value} would need {name} to run {needed:.0%} more efficiently per "
               f"FLOP than {largest} (measured here: {efficiency[name]:.0f} vs "
               f"{efficiency[largest]:.0f} GFLOP/s). The paper's ResNet-101 / ResNet-18 cost "
               "split must differ from this reconstruction's")
    else:
        why = (f"the FLOP ratio is {flop_ratio:.1f}, but {name} runs at "
               f"{efficiency[name]:.0f} GFLOP/s against {efficiency[largest]:.0f} for "
               f"{largest}: its narrow convolutions and full-resolution layers use the CPU "
               "less well")
    return BenchRow(
        id=row_id, title=f"{name} vs {largest} FPS, ONNX Runtime CPU",
        compared=f"{name} FPS vs {largest} FPS (paper: {target.value})",
        figure_a=Figure(name=name, value=1.0 / small.median, unit="FPS"),
        figure_b=Figure(name=largest, value=1.0 / large.median, unit="FPS"),
        ratio=ratio, target=target, passed=passed, why=why, method=method,
        details={**details, "flop_ratio": round(flop_ratio, 2),
                 "round_ratios": [round(r, 3) for r in round_ratios(large, small)]},
        seconds=seconds)


def _runtime_row(row_id: str, name: str, ort: Timing, eager: Timing, method: str,
                 seconds: float) -> BenchRow:
    return BenchRow(
        id=row_id, title=f"{name}: ONNX Runtime vs PyTorch eager",
        compared=f"{name} ONNX Runtime FPS vs PyTorch eager FPS",
        figure_a=Figure(name="ORT", value=1.0 / ort.median, unit="FPS"),
        figure_b=Figure(name="eager", value=1.0 / eager.median, unit="FPS"),
        ratio=eager.median / ort.median, target=None, passed=None,
        why="reported for comparison; the issue sets no target", method=method,
        details={"ort": ort.summary(), "eager": eager.summary(),
                 "paper_cpu_fps": PAPER_CPU_FPS.get(name)},
        seconds=seconds)


def onnx_path(workspace: Workspace, name: str) -> Path:
    """Where :func:`exported` writes ``name``'s graph."""
    return workspace.root / "onnx" / f"{name}.onnx"
