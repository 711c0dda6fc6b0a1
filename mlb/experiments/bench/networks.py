"""Row 10: any student network (MODNet, a timm-encoder U-Net, the ResNet U-Nets) on ONNX
Runtime's CPU provider, timed side by side in one run.

Every network is exported with :func:`mlb.export.export_onnx` (checked against PyTorch) from
an untrained checkpoint and timed in rounds with :func:`mlb.bench.measure.interleaved`, so the
ratios compare frames run moments apart. 10a: the half-width ResNet-18 U-Net against MODNet
(goal >= 3; the paper's CPU figures are 43.7 / 8.9 = 4.9). 10b onwards: each network against
the last (ResNet-101), reported with the paper's CPU FPS where it has one.
"""

from __future__ import annotations

import statistics
import time

import torch

from mlb.experiments.bench.config import NetworksBench
from mlb.experiments.bench.measure import Timing, interleaved, round_ratios
from mlb.experiments.bench.report import BenchRow, Figure, Target, judge
from mlb.experiments.bench.students import exported, model_gflops
from mlb.experiments.bench.workspace import Workspace
from mlb.export import onnx_session, run_onnx

__all__ = ["PAPER_CPU_FPS", "bench_networks"]

# The paper (Table 6 and section 1): FPS at 512x512, ONNX Runtime, 14-core Xeon Gold 5120.
PAPER_CPU_FPS = {"unet_r101": 5.0, "unet_r18": 18.7, "unet_r18_w05": 43.7, "modnet": 8.9}
TARGET_FAST_OVER_SLOW = 3.0


def bench_networks(size: NetworksBench, workspace: Workspace) -> list[BenchRow]:
    started = time.perf_counter()
    for name in (size.fast, size.slow):
        if name not in size.models:
            raise ValueError(f"row 10 compares {name!r}, which is not among {size.models}")
    threads = torch.get_num_threads()
    pixels = torch.rand(1, 3, size.size, size.size,
                        generator=torch.Generator().manual_seed(0)).numpy()
    calls, exports = {}, {}
    for name in size.models:
        exports[name] = exported(workspace, name)
        session = onnx_session(exports[name].path, threads=threads)
        calls[name] = lambda session=session: run_onnx(session, pixels)
    ort = interleaved(calls, size.timing)
    gflops = {name: round(model_gflops(name, size.size), 2) for name in size.models}
    seconds = time.perf_counter() - started
    method = (f"One {size.size}x{size.size} frame (batch 1), untrained weights, ONNX Runtime "
              f"CPU, {threads} intra-op threads, opset-17 exports checked against PyTorch; "
              f"{size.timing.warmup} warm-up calls each, then {size.timing.repeats} rounds over "
              f"the {len(size.models)} networks in alternating order; FPS from median times, "
              "ratios the median of per-round ratios.")
    details = {"ort_fps": {name: 1.0 / timing.median for name, timing in ort.items()},
               "gflop_per_frame": gflops, "paper_cpu_fps": PAPER_CPU_FPS,
               "export_max_abs_diff": {n: r.max_abs_diff for n, r in exports.items()}}
    target = Target(op=">=", value=TARGET_FAST_OVER_SLOW)
    rows = [_row("10a", size.fast, size.slow, ort, target, method, details, seconds)]
    reference = size.models[-1]
    rows += [_row(f"10{chr(ord('b') + index)}", name, reference, ort, None, method, details,
                  seconds)
             for index, name in enumerate(size.models[:-1])]
    return rows


def _row(row_id: str, name: str, other: str, ort: dict[str, Timing], target: Target | None,
         method: str, details: dict, seconds: float) -> BenchRow:
    ratio = statistics.median(round_ratios(ort[other], ort[name]))  # FPS ratio
    passed = judge(ratio, target) if target is not None else None
    paper = (f"{PAPER_CPU_FPS[name] / PAPER_CPU_FPS[other]:.1f}"
             if name in PAPER_CPU_FPS and other in PAPER_CPU_FPS else "no figure")
    if target is None:
        why = "reported for comparison; the issue sets no target for it"
    elif passed:
        why = None
    else:
        flops = details["gflop_per_frame"]
        why = (f"{name} needs {flops[name]} GFLOP per frame and {other} {flops[other]}; on this "
               f"CPU {name} runs at {flops[name] * ratio / max(flops[other], 1e-9):.2f}x "
               f"{other}'s GFLOP/s, which the target would need to be "
               f"{flops[name] * target.value / max(flops[other], 1e-9):.2f}x")
    return BenchRow(
        id=row_id, title=f"{name} vs {other} FPS, ONNX Runtime CPU",
        compared=f"{name} FPS vs {other} FPS (paper's CPU ratio: {paper})",
        figure_a=Figure(name=name, value=1.0 / ort[name].median, unit="FPS"),
        figure_b=Figure(name=other, value=1.0 / ort[other].median, unit="FPS"),
        ratio=ratio, target=target, passed=passed, why=why, method=method,
        details={**details, "round_ratios": [round(r, 3)
                                              for r in round_ratios(ort[other], ort[name])]},
        seconds=seconds)
