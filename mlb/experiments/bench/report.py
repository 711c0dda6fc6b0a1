"""Benchmark results: rows, the run's report, and its JSON and markdown forms.

A row compares two figures measured side by side in one process (``figure_a`` is mlb's,
``figure_b`` the baseline's), states how they are combined (``ratio_of``: ``a / b`` or
``|a - b|``), the target, and whether it was met. ``passed`` is None when the row has no
target (reported figures) or cannot be measured here; ``why`` then says so, with the measured
figure that limits it. ``docs/benchmarks.md`` is written by :func:`write_markdown`, never by
hand.
"""

from __future__ import annotations

import datetime
import json
import operator
import os
import platform
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BenchReport",
    "BenchRow",
    "Figure",
    "Target",
    "busy_warning",
    "judge",
    "machine_info",
    "now_utc",
    "read_json",
    "render_markdown",
    "render_table",
    "write_json",
    "write_markdown",
]

_OPERATORS = {">=": operator.ge, "<=": operator.le}


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Figure(_Record):
    """One measured figure: ``images/s`` of the relabel pipeline, ``MiB`` of peak RSS ..."""

    name: str
    value: float
    unit: str

    def text(self) -> str:
        return f"{_number(self.value)} {self.unit}".strip()


class Target(_Record):
    """``ratio op value``, e.g. ``>= 0.85``."""

    op: Literal[">=", "<="]
    value: float

    def met_by(self, ratio: float) -> bool:
        return bool(_OPERATORS[self.op](ratio, self.value))

    def text(self) -> str:
        return f"{self.op} {_number(self.value)}"


class BenchRow(_Record):
    """One comparison: both figures, how they combine, the target and the verdict."""

    id: str
    title: str
    compared: str
    figure_a: Figure
    figure_b: Figure
    ratio: float | None
    ratio_of: Literal["a / b", "|a - b|"] = "a / b"
    target: Target | None
    passed: bool | None
    why: str | None = None
    """Set when ``passed`` is not True: no target, or what limits the row on this machine."""
    method: str
    """How the figures were measured (repeats, medians, processes, threads)."""
    details: dict[str, Any]
    seconds: float


def judge(ratio: float | None, target: Target | None) -> bool | None:
    """``target.met_by(ratio)``; None without a target or a ratio."""
    if target is None or ratio is None:
        return None
    return target.met_by(ratio)


class BenchReport(_Record):
    """A whole ``mlb bench`` run: where, when, how it was started, and its rows."""

    preset: str
    command: str
    date: str
    machine: dict[str, Any]
    seconds: float
    rows: list[BenchRow]
    skipped: dict[str, str] = {}
    """Row families not measured, by number: no CUDA device, or the error that stopped it."""

    @property
    def counts(self) -> dict[str, int]:
        verdicts = [row.passed for row in self.rows]
        return {"passed": verdicts.count(True), "failed": verdicts.count(False),
                "not_judged": verdicts.count(None)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """Platform, CPU model and cores, memory, library versions, torch threads, GPU, load."""
    import numpy
    import onnxruntime
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        # Other processes share the CPU: the load tells how noisy the absolute figures are.
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def now_utc() -> str:
    """The date and time of a run, to the minute, in UTC."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_json(report: BenchReport, path: str | os.PathLike) -> Path:
    """The report as indented JSON (the machine-readable record of the run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=1) + "\n",
                    encoding="utf-8")
    return path


# --------------------------------------------------------------------------- markdown


def _number(value: float) -> str:
    """Three significant figures, plain notation where readable."""
    if value == 0 or not 1e-3 <= abs(value) < 1e6:
        return f"{value:.3g}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _verdict(row: BenchRow) -> str:
    return {True: "pass", False: "FAIL", None: "not judged" if row.target else "reported"}[
        row.passed]


def _machine_line(machine: dict[str, Any]) -> str:
    gpu = machine.get("gpu") or "no GPU"
    load = ", ".join(str(value) for value in machine.get("load_average", []))
    end = ", ".join(str(value) for value in machine.get("load_average_end", []))
    return (f"{machine['cpu']}, {machine['usable_cores']} cores usable, "
            f"{machine.get('memory_gib')} GiB; {gpu}; torch {machine['torch']} "
            f"({machine['torch_threads']} threads), onnxruntime {machine['onnxruntime']}, "
            f"Python {machine['python']}; {machine['platform']}; load average (1, 5, 15 min) "
            f"{load} at the start, {end} at the end")


def render_table(rows: list[BenchRow]) -> list[str]:
    """The results table as markdown lines (also what ``mlb bench`` prints)."""
    lines = ["| # | compared | A | B | ratio | target | result |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "-" if row.ratio is None else _number(row.ratio)
        if row.ratio is not None and row.ratio_of != "a / b":
            ratio = f"{ratio} ({row.ratio_of})"
        target = row.target.text() if row.target else "-"
        lines.append(
            f"| {row.id} | {row.compared} | {row.figure_a.name}: {row.figure_a.text()} | "
            f"{row.figure_b.name}: {row.figure_b.text()} | {ratio} | {target} | "
            f"{_verdict(row)} |")
    return lines


def _skipped(skipped: dict[str, str]) -> list[str]:
    if not skipped:
        return []
    return ["", "Not measured:", *(f"- row {key}: {reason}" for key, reason in skipped.items())]


def _notes(rows: list[BenchRow]) -> list[str]:
    """Each row's method (once for rows measured together) and why it is not a pass."""
    lines, previous = [], None
    for row in rows:
        method = "" if row.method == previous else f" {row.method}"
        duration = "" if row.method == previous else f" ({_duration(row.seconds)})"
        lines += ["", f"**{row.id}. {row.title}**{duration}.{method}"]
        if row.why:
            lines += ["", f"*{_verdict(row)}:* {row.why}"]
        previous = row.method
    return lines


def busy_warning(machine: dict[str, Any]) -> str | None:
    """A warning when other jobs kept more cores busy than the machine has, else None.

    Measured here: with 2 torch threads on 2 cores and other jobs running, a training step
    took 4-8 s instead of 0.3 s (every parallel region waits for a descheduled thread), and
    small operations suffer far more than large ones, which skews even side-by-side ratios.
    """
    cores = machine.get("usable_cores") or machine.get("cores") or 1
    busiest = max([*machine.get("load_average", [0.0])[:1],
                   *machine.get("load_average_end", [0.0])[:1]])
    if busiest <= cores:
        return None
    return (f"**Busy machine:** the 1-minute load average reached {busiest:g} on {cores} cores "
            "(other jobs). Ratios of rows made of many small operations (2, 3, 5) swing with "
            "such load; rerun on an idle machine, or with `--threads 1`, before trusting them.")


def _header(report: BenchReport) -> list[str]:
    counts = report.counts
    warning = busy_warning(report.machine)
    return [
        f"- command: `{report.command}`",
        f"- date: {report.date}; preset `{report.preset}`; whole run {_duration(report.seconds)}",
        f"- machine: {_machine_line(report.machine)}",
        f"- verdicts: {counts['passed']} pass, {counts['failed']} fail, "
        f"{counts['not_judged']} reported or not judged",
        *(["", warning] if warning else []),
    ]


def _full_section(full: BenchReport) -> list[str]:
    """An earlier run at the full sizes: its header, table and the reasons of non-passes."""
    reasons = [f"- {row.id}: {row.why}" for row in full.rows if row.why and row.target]
    return ["", f"## The {full.preset} run", "", *_header(full), "", *render_table(full.rows),
            *_skipped(full.skipped), *(["", *reasons] if reasons else [])]


def render_markdown(report: BenchReport, *, full: BenchReport | None = None) -> str:
    """The results page: header (machine, date, command, time), table, per-row notes, and
    optionally an earlier full-size run (``full``, read from its JSON) with its own time."""
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by `mlb bench`; rerun the command below to regenerate. "
        "Do not edit by hand. -->",
        "",
        *_header(report),
        "",
        "Each row compares mlb's figure (A) with its baseline (B) measured side by side in one "
        "run; the ratio is what is judged, since other processes share the machine. Absolute "
        "figures are this machine's, under the load shown above.",
        "",
        *render_table(report.rows),
        *_skipped(report.skipped),
        *(_full_section(full) if full is not None else []),
        "",
        "## How each row was measured",
        *_notes(report.rows),
        "",
    ]
    return "\n".join(lines)


def read_json(path: str | os.PathLike) -> BenchReport:
    """A report written by :func:`write_json` (e.g. an earlier full run)."""
    path = Path(path)
    try:
        return BenchReport.model_validate_json(path.read_bytes())
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{path} is not an mlb bench report: {error}") from None


def write_markdown(report: BenchReport, path: str | os.PathLike, *,
                   full: BenchReport | None = None) -> Path:
    """The page of :func:`render_markdown` written to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(report, full=full), encoding="utf-8")
    return path
