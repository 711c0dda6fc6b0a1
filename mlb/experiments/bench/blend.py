"""Row 3: the batched blend kernel against a per-image numpy blend, and against a copy.

``mlb.blend.blend_labels`` (torch, whole batch) vs ``mlb.blend.blend_labels_numpy`` (the
same math one image at a time) on one ``(B, 1, H, W)`` float32 batch with the default blend
settings (soft, no band); and the kernel's bytes/s against a same-size tensor copy
(``clone``: read one tensor, write a new one), the speed limit of any kernel that reads its
inputs and returns fresh tensors.
"""

from __future__ import annotations

import statistics
import time

import torch

from mlb.blend import BlendConfig, blend_labels_numpy, blend_labels_with
from mlb.experiments.bench.config import BlendBench
from mlb.experiments.bench.measure import interleaved, round_ratios
from mlb.experiments.bench.report import BenchRow, Figure, Target, judge

__all__ = ["bench_blend", "blend_inputs"]

SPEEDUP_TARGET = Target(op=">=", value=10.0)
BANDWIDTH_TARGET = Target(op=">=", value=0.3)


def blend_inputs(batch: int, size: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Teacher alpha and boundary probability (uniform), binary coarse mask; float32."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 1, size, size)
    return {"teacher_alpha": torch.rand(shape, generator=generator),
            "teacher_boundary": torch.rand(shape, generator=generator),
            "coarse_mask": (torch.rand(shape, generator=generator) > 0.5).float()}


def _bytes_moved(inputs: dict[str, torch.Tensor], outputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes read (every input) plus bytes written (outputs that are new tensors)."""
    pointers = {x.data_ptr() for x in inputs.values()}
    written = sum(x.nbytes for x in outputs if x.data_ptr() not in pointers)
    return sum(x.nbytes for x in inputs.values()) + written


def bench_blend(size: BlendBench) -> list[BenchRow]:
    """3a: speed-up over numpy; 3b: bytes/s as a fraction of a tensor copy's."""
    started = time.perf_counter()
    config = BlendConfig()
    inputs = blend_inputs(size.batch, size.size)
    arrays = {name: x.numpy() for name, x in inputs.items()}
    timings = interleaved({
        "torch": lambda: blend_labels_with(config, *inputs.values()),
        "numpy": lambda: blend_labels_numpy(*arrays.values(), **config.model_dump()),
        "copy": lambda: inputs["teacher_alpha"].clone(),
    }, size.timing)
    moved = _bytes_moved(inputs, blend_labels_with(config, *inputs.values()))
    copied = 2 * inputs["teacher_alpha"].nbytes
    speedup = statistics.median(round_ratios(timings["numpy"], timings["torch"]))
    # bytes/s ratio = (moved / t_torch) / (copied / t_copy), per round.
    fraction = statistics.median(
        r * moved / copied for r in round_ratios(timings["copy"], timings["torch"]))
    torch_s, numpy_s, copy_s = (timings[name].median for name in ("torch", "numpy", "copy"))
    shape = f"({size.batch}, 1, {size.size}, {size.size}) float32"
    method = (f"One {shape} batch, soft blend without band (the default BlendConfig), "
              f"{torch.get_num_threads()} torch threads; {size.timing.warmup} warm-up calls, "
              f"then {size.timing.repeats} rounds of (torch, numpy, copy) in alternating order; "
              "figures are medians, the ratio the median of per-round ratios.")
    details = {"torch": timings["torch"].summary(), "numpy": timings["numpy"].summary(),
               "copy": timings["copy"].summary(), "bytes_moved": moved,
               "bytes_copied": copied, "shape": [size.batch, 1, size.size, size.size]}
    seconds = time.perf_counter() - started
    # Reading three inputs and writing one output moves twice the bytes of a copy: no
    # batched kernel returning a fresh tensor can take less than ~2 copies' time.
    bound = numpy_s / (copy_s * moved / copied)
    speed_passed = judge(speedup, SPEEDUP_TARGET)
    speed_why = None if speed_passed else (
        f"memory bound: the per-image numpy baseline works on {size.size}x{size.size} planes "
        f"that stay in cache ({numpy_s * 1e3:.1f} ms for the batch), while a batched kernel "
        f"must stream the whole batch through memory; moving its bytes at this machine's "
        f"copy speed ({copied / copy_s / 1e9:.2f} GB/s for a clone) takes "
        f"{copy_s * moved / copied * 1e3:.1f} ms, so at most {bound:.1f}x is reachable here")
    fraction_passed = judge(fraction, BANDWIDTH_TARGET)
    return [
        BenchRow(id="3a", title="Blend kernel vs per-image numpy",
                 compared="batched blend_labels vs per-image blend_labels_numpy",
                 figure_a=Figure(name="torch", value=size.batch / torch_s, unit="img/s"),
                 figure_b=Figure(name="numpy", value=size.batch / numpy_s, unit="img/s"),
                 ratio=speedup, target=SPEEDUP_TARGET, passed=speed_passed, why=speed_why,
                 method=method,
                 details={**details, "speedup_bound": round(bound, 2)}, seconds=seconds),
        BenchRow(id="3b", title="Blend kernel bytes/s vs a tensor copy",
                 compared="blend_labels bytes/s vs same-size tensor clone bytes/s",
                 figure_a=Figure(name="blend", value=moved / torch_s / 1e9, unit="GB/s"),
                 figure_b=Figure(name="clone", value=copied / copy_s / 1e9, unit="GB/s"),
                 ratio=fraction, target=BANDWIDTH_TARGET, passed=fraction_passed,
                 why=None if fraction_passed else (
                     f"the kernel moves {moved / 2**20:.0f} MiB in {torch_s * 1e3:.1f} ms; a "
                     f"clone moves {copied / 2**20:.0f} MiB in {copy_s * 1e3:.1f} ms"),
                 method=method + " Bytes: every input read once plus every new output "
                 "written once; a clone reads and writes one tensor.",
                 details=details, seconds=seconds),
    ]
