"""The loss curve of a training run, as a PNG next to its checkpoint (for people to look at)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["curve_path", "moving_average", "save_loss_curve"]


def curve_path(checkpoint: str | os.PathLike) -> Path:
    """``runs/teacher.pt`` -> ``runs/teacher.loss.png``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".loss.png")


def moving_average(values: Sequence[float], *, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start), same length."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _plot_terms(axis: Axes, steps: np.ndarray, history: Mapping[str, Sequence[float]]) -> None:
    terms = sorted((name for name in history if name not in ("step", "lr")),
                   key=lambda name: name != "total")
    window = max(1, len(steps) // 50)
    for colour, name in enumerate(terms):
        values = np.clip(np.asarray(history[name], dtype=np.float64), 1e-12, None)  # log axis
        axis.plot(steps, values, color=f"C{colour}", alpha=0.2, linewidth=0.8)
        axis.plot(steps, moving_average(values, window=window), color=f"C{colour}", label=name,
                  linewidth=1.5)
    if terms:
        axis.legend(loc="upper right")


def save_loss_curve(
    history: Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Plot every loss term of ``history`` against ``history["step"]`` (log scale) to ``path``.

    ``history``: columns of equal length, ``"step"`` and ``"lr"`` plus named loss terms
    (``"total"`` first); each term is drawn raw (faint) and as a trailing mean over ~2% of
    the run. The learning rate goes on a second axis.
    """
    steps = np.asarray(history.get("step", []), dtype=np.int64)
    # A bare Figure on the Agg canvas: no pyplot, so no global backend switch and no GUI
    # (training runs on headless machines, in workers, and inside notebooks).
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    _plot_terms(axis, steps, history)
    axis.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    if "lr" in history:
        rate_axis = axis.twinx()
        rate_axis.plot(steps, history["lr"], color="gray", linestyle=":", linewidth=1.0)
        rate_axis.set_ylabel("learning rate", color="gray")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
