"""Row 4: the memory-lean DDC loss against the straightforward unfold implementation.

``mlb.ddc.ddc_loss`` never materialises the 121 candidate colours of every pixel;
``mlb.ddc.ddc_loss_unfold`` (the reference form) does. Each is run forward and backward on
the same seeded batch: peak memory in a fresh interpreter per implementation (the growth of
its peak RSS over the child's baseline after imports and inputs), time side by side in this
process, values (and gradients) compared.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from mlb.ddc import ddc_loss, ddc_loss_unfold
from mlb.experiments.bench.config import DdcBench
from mlb.experiments.bench.measure import interleaved, peak_rss_bytes, round_ratios, run_isolated
from mlb.experiments.bench.report import BenchRow, Figure, Target, judge

__all__ = ["IMPLEMENTATIONS", "bench_ddc", "ddc_inputs", "ddc_peak_memory"]

IMPLEMENTATIONS = {"ddc_loss": ddc_loss, "ddc_loss_unfold": ddc_loss_unfold}
MEMORY_TARGET = Target(op="<=", value=0.25)
TIME_TARGET = Target(op="<=", value=1.0)
VALUE_TARGET = Target(op="<=", value=1e-5)


def ddc_inputs(batch: int, size: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform random RGB batch ``(B, 3, S, S)`` and alpha ``(B, 1, S, S)``, float32."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, size, size, generator=generator)
    return image, torch.rand(batch, 1, size, size, generator=generator)


def _forward_backward(implementation: str, image: torch.Tensor, alpha: torch.Tensor
                      ) -> tuple[float, torch.Tensor]:
    pred_alpha = alpha.clone().requires_grad_(True)
    loss = IMPLEMENTATIONS[implementation](image, pred_alpha)
    loss.backward()
    return float(loss.detach()), pred_alpha.grad


def ddc_peak_memory(*, implementation: str, batch: int, size: int) -> dict[str, Any]:
    """Run in a fresh process: one forward + backward; peak RSS growth, value, gradient."""
    image, alpha = ddc_inputs(batch, size)
    baseline = peak_rss_bytes()
    started = time.perf_counter()
    value, gradient = _forward_backward(implementation, image, alpha)
    seconds = time.perf_counter() - started
    return {"peak_growth_bytes": peak_rss_bytes() - baseline, "baseline_bytes": baseline,
            "value": value, "gradient": gradient.numpy(), "seconds": seconds}


def bench_ddc(size: DdcBench) -> list[BenchRow]:
    """4a peak memory ratio, 4b time ratio, 4c value difference (lean vs unfold)."""
    started = time.perf_counter()
    lean, unfold = "ddc_loss", "ddc_loss_unfold"
    memory = {name: run_isolated(ddc_peak_memory, implementation=name, batch=size.batch,
                                 size=size.size) for name in (lean, unfold)}
    time_batch = size.time_batch or size.batch
    image, alpha = ddc_inputs(time_batch, size.size)
    timings = interleaved({name: lambda name=name: _forward_backward(name, image, alpha)
                           for name in (lean, unfold)}, size.timing)
    seconds = time.perf_counter() - started
    shape = f"batch {size.batch}, {size.size}x{size.size}"
    common = (f"Forward + backward of L_DDC (11x11 window, 11 neighbours) on a seeded uniform "
              f"random batch, {torch.get_num_threads()} torch threads.")
    return [_memory_row(memory, shape, common, seconds),
            _time_row(timings, time_batch, size, common, seconds),
            _value_row(memory, shape, common, seconds)]


def _memory_row(memory: dict[str, dict], shape: str, common: str, seconds: float) -> BenchRow:
    lean, unfold = (memory[name]["peak_growth_bytes"] / 2**20
                    for name in ("ddc_loss", "ddc_loss_unfold"))
    # The peak moves only past the baseline's peak (imports, inputs): at tiny sizes a growth
    # can be 0; 1 MiB is the resolution the ratio is taken at.
    ratio = max(lean, 1.0) / max(unfold, 1.0)
    passed = judge(ratio, MEMORY_TARGET)
    return BenchRow(
        id="4a", title="DDC loss peak memory vs unfold",
        compared=f"ddc_loss vs ddc_loss_unfold peak memory ({shape})",
        figure_a=Figure(name="ddc_loss", value=lean, unit="MiB"),
        figure_b=Figure(name="unfold", value=unfold, unit="MiB"),
        ratio=ratio, target=MEMORY_TARGET, passed=passed,
        why=None if passed else f"ddc_loss raised the peak by {lean:.0f} MiB, the unfold form "
        f"by {unfold:.0f} MiB; at small sizes fixed first-call allocations dominate both",
        method=common + " Each implementation runs once in a fresh interpreter; the "
        "figure is the growth of its peak RSS (VmHWM) over the peak after imports and "
        "inputs (tracemalloc cannot see torch's allocator).",
        details={name: {key: value for key, value in result.items() if key != "gradient"}
                 for name, result in memory.items()},
        seconds=seconds)


def _time_row(timings: dict, time_batch: int, size: DdcBench, common: str,
              seconds: float) -> BenchRow:
    lean, unfold = timings["ddc_loss"], timings["ddc_loss_unfold"]
    ratio = statistics.median(round_ratios(lean, unfold))
    shape = f"batch {time_batch}, {size.size}x{size.size}"
    passed = judge(ratio, TIME_TARGET)
    return BenchRow(
        id="4b", title="DDC loss time vs unfold",
        compared=f"ddc_loss vs ddc_loss_unfold seconds per call ({shape})",
        figure_a=Figure(name="ddc_loss", value=lean.median, unit="s"),
        figure_b=Figure(name="unfold", value=unfold.median, unit="s"),
        ratio=ratio, target=TIME_TARGET, passed=passed,
        why=None if passed else "the lean form ranks candidates tile by tile; here that "
        f"cost {lean.median:.2f} s against {unfold.median:.2f} s for one unfold",
        method=common + f" Timed in this process at {shape}: {size.timing.warmup} warm-up "
        f"calls each, then {size.timing.repeats} rounds in alternating order; figures are "
        "medians, the ratio the median of per-round ratios (lower is better).",
        details={"ddc_loss": lean.summary(), "ddc_loss_unfold": unfold.summary(),
                 "round_ratios": [round(r, 3) for r in round_ratios(lean, unfold)]},
        seconds=seconds)


def _value_row(memory: dict[str, dict], shape: str, common: str, seconds: float) -> BenchRow:
    lean, unfold = memory["ddc_loss"], memory["ddc_loss_unfold"]
    difference = abs(lean["value"] - unfold["value"])
    gradient = float(np.abs(lean["gradient"] - unfold["gradient"]).max())
    passed = judge(max(difference, gradient), VALUE_TARGET)
    return BenchRow(
        id="4c", title="DDC loss values vs unfold",
        compared=f"ddc_loss vs ddc_loss_unfold loss value ({shape})",
        figure_a=Figure(name="ddc_loss", value=lean["value"], unit=""),
        figure_b=Figure(name="unfold", value=unfold["value"], unit=""),
        ratio=difference, ratio_of="|a - b|", target=VALUE_TARGET, passed=passed,
        method=common + " Values from the memory runs; the gradients with respect to alpha "
        "must agree within the same tolerance.",
        details={"value_difference": difference, "gradient_max_difference": gradient},
        seconds=seconds)
