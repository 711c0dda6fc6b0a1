"""``mlb bench``: the benchmark that proves the offline pipeline's speed claims (issue 7).

Each row compares mlb's figure with a baseline measured side by side in one run, with a
target on their ratio; :func:`run_bench` measures a preset (``TINY``, ``QUICK``, ``FULL``) and
returns a :class:`BenchReport`, which :func:`write_json` and :func:`write_markdown` record
(``docs/benchmarks.md`` is written this way, never by hand).

    from mlb.experiments.bench import QUICK, run_bench, write_markdown
    write_markdown(run_bench(QUICK), "docs/benchmarks.md")
"""

from mlb.experiments.bench.config import FULL, PRESETS, QUICK, TINY, BenchSize
from mlb.experiments.bench.report import (
    BenchReport,
    BenchRow,
    Figure,
    Target,
    render_markdown,
    write_json,
    write_markdown,
)
from mlb.experiments.bench.runner import FAMILIES, Family, run_bench

__all__ = [
    "FAMILIES",
    "FULL",
    "PRESETS",
    "QUICK",
    "TINY",
    "BenchReport",
    "BenchRow",
    "BenchSize",
    "Family",
    "Figure",
    "Target",
    "render_markdown",
    "run_bench",
    "write_json",
    "write_markdown",
]
