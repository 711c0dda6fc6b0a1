"""Row 6: the relabel streams: its peak memory does not grow with the corpus.

The same relabel (teacher, settings) runs over a small and a ten times larger corpus, each in
a fresh interpreter; the figure is the process's peak RSS (``VmHWM``). Batches, decoded
images and a shard's labels are bounded by the pipeline's queues, so the peak should stay
flat however many images pass through.
"""

from __future__ import annotations

import time
from typing import Any

from mlb.experiments.bench.config import MemoryBench
from mlb.experiments.bench.measure import peak_rss_bytes, run_isolated
from mlb.experiments.bench.report import BenchRow, Figure, Target, judge
from mlb.experiments.bench.workspace import Workspace
from mlb.labels.relabel import relabel
from mlb.labels.request import RelabelConfig, RelabelRequest

__all__ = ["bench_memory", "relabel_peak_memory"]

TARGET = Target(op="<=", value=1.2)
_MIB = 2**20


def relabel_peak_memory(*, request: dict[str, Any]) -> dict[str, float]:
    """Run in a fresh process: one whole relabel; the peak RSS before and after it."""
    parsed = RelabelRequest.model_validate(request)
    baseline = peak_rss_bytes()  # after importing torch and mlb: the fixed cost
    started = time.perf_counter()
    summary = relabel(parsed, progress=False)
    return {"baseline_bytes": baseline, "peak_bytes": peak_rss_bytes(),
            "labelled": summary.counts["labelled"], "seconds": time.perf_counter() - started}


def bench_memory(size: MemoryBench, workspace: Workspace) -> list[BenchRow]:
    """Peak RSS of a relabel over ``size.large`` images over that of ``size.small``."""
    started = time.perf_counter()
    teacher = workspace.checkpoint(size.teacher)
    config = RelabelConfig(inference={"short_side": size.short_side,
                                      "batch_size": size.batch_size},
                           shard_size=size.shard_size)
    results = {}
    for label, count in (("small", size.small), ("large", size.large)):
        corpus = workspace.corpus(count=count, size=size.image_size)
        request = RelabelRequest(teacher=str(teacher), images=str(corpus.images),
                                 masks=str(corpus.masks),
                                 store=str(workspace.scratch(f"memory-{label}")), config=config)
        results[label] = run_isolated(relabel_peak_memory,
                                      request=request.model_dump(mode="json"))
    small, large = results["small"], results["large"]
    ratio = large["peak_bytes"] / small["peak_bytes"]
    growth = {label: (result["peak_bytes"] - result["baseline_bytes"]) / _MIB
              for label, result in results.items()}
    passed = judge(ratio, TARGET)
    return [BenchRow(
        id="6", title="Relabel peak memory: large vs small corpus",
        compared=f"peak RSS relabelling {size.large} vs {size.small} images",
        figure_a=Figure(name=f"{size.large} images", value=large["peak_bytes"] / _MIB,
                        unit="MiB"),
        figure_b=Figure(name=f"{size.small} images", value=small["peak_bytes"] / _MIB,
                        unit="MiB"),
        ratio=ratio, target=TARGET, passed=passed,
        why=None if passed else (
            f"the peak grew by {growth['large']:.0f} MiB over {size.large} images against "
            f"{growth['small']:.0f} MiB over {size.small}: something accumulates per image"),
        method=(f"Synthetic {size.image_size}x{size.image_size} photos, teacher {size.teacher} "
                f"(untrained) at short side {size.short_side}, batch {size.batch_size}, shards "
                f"of {size.shard_size}; each whole `mlb.labels.relabel.relabel` (prepare, label, "
                "publish) in a fresh interpreter, peak RSS from VmHWM. The growth over "
                "the peak after imports (torch and mlb, the same in both) is in the details."),
        details={"growth_mib": {label: round(value, 1) for label, value in growth.items()},
                 "growth_ratio": round(growth["large"] / max(growth["small"], 1.0), 3),
                 "baseline_mib": {label: round(result["baseline_bytes"] / _MIB, 1)
                                  for label, result in results.items()},
                 "labelled": {label: result["labelled"] for label, result in results.items()},
                 "relabel_s": {label: round(result["seconds"], 2)
                               for label, result in results.items()}},
        seconds=time.perf_counter() - started)]
