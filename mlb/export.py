"""ONNX export of a trained checkpoint, checked against PyTorch, runnable with ONNX Runtime.

The graph takes ``image`` ``(B, 3, H, W) float32`` RGB in [0, 1] with dynamic batch, height and
width, and returns ``alpha`` (in [0, 1]) and ``boundary_logit``, both ``(B, 1, H, W)``: the
network's own :class:`~mlb.models.MattingOutput` (padding to the stride, ImageNet normalisation
and the crop back are inside the graph). Resizing to the short side stays outside, as in
:mod:`mlb.inference`.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` at opset 17; it is
the stable path for dynamic spatial axes on this model (the dynamo exporter is newer and
needs onnxscript). The export is verified on a random input of another size than the one
traced, so a height or width frozen into the graph is caught.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from mlb.checkpoint import Weights, load_model
from mlb.config import FrozenConfig

__all__ = [
    "DEFAULT_OPSET",
    "ExportReport",
    "check_onnx",
    "export_onnx",
    "onnx_session",
    "run_onnx",
]

DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("alpha", "boundary_logit")
# Traced at one size, checked at another (neither a multiple of the network stride 16).
TRACE_SIZE = (72, 56)
CHECK_SIZE = (50, 83)
# float32 ORT and PyTorch CPU kernels differ by ~1e-6; beyond this the graph is wrong.
MAX_ABS_DIFF = 1e-3


class ExportReport(FrozenConfig):
    """What ``export_onnx`` wrote and how closely ONNX Runtime matched PyTorch."""

    path: str
    checkpoint: str
    weights: str
    opset: int
    max_abs_diff: float
    """Largest |ORT - PyTorch| over both outputs on the random check input."""
    check_shape: tuple[int, int, int, int]
    size_bytes: int


def onnx_session(
    path: str | os.PathLike, *, threads: int | None = None,
    providers: list[str] | None = None,
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for ``path`` (CPU provider unless ``providers`` is given)."""
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        os.fspath(path), sess_options=options,
        providers=providers or ["CPUExecutionProvider"],
    )


def run_onnx(
    model: str | os.PathLike | onnxruntime.InferenceSession, image_batch: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported network: ``(B, 3, H, W) float32`` in [0, 1] -> ``(alpha,
    boundary_logit)``, each ``(B, 1, H, W) float32``.

    ``model`` is a path (a session is created per call) or a session from
    :func:`onnx_session` (reuse it when timing).
    """
    session = model if isinstance(model, onnxruntime.InferenceSession) else onnx_session(model)
    image_batch = np.asarray(image_batch)
    if image_batch.ndim != 4 or image_batch.shape[1] != 3:
        raise ValueError(f"image_batch must be (B, 3, H, W), got shape {image_batch.shape}")
    feed = {INPUT_NAME: np.ascontiguousarray(image_batch, dtype=np.float32)}
    alpha, boundary_logit = session.run(list(OUTPUT_NAMES), feed)
    return alpha, boundary_logit


def _export_graph(model: torch.nn.Module, path: Path, *, opset: int) -> None:
    example = torch.rand(1, 3, *TRACE_SIZE)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The tracer warns about shape arithmetic it records symbolically (pad to stride),
        # and torch >= 2.9 flags the TorchScript exporter as legacy: it is chosen on purpose
        # (module docstring), and the check below proves the graph right at another size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX",
                                DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        torch.onnx.export(
            model, (example,), os.fspath(path), input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: dynamic for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=opset, dynamo=False,
        )


def check_onnx(
    model: torch.nn.Module, path: str | os.PathLike, *, shape: tuple[int, int, int, int]
) -> float:
    """Max |ORT - PyTorch| over both outputs on a random ``shape`` input (seeded, CPU)."""
    onnx.checker.check_model(os.fspath(path))
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(image)
    actual = run_onnx(path, image.numpy())
    return max(
        float(np.abs(got - want.numpy()).max()) for got, want in zip(actual, expected, strict=True)
    )


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: Weights = "model",
    opset: int = DEFAULT_OPSET,
    max_abs_diff: float = MAX_ABS_DIFF,
) -> ExportReport:
    """Export ``checkpoint``'s network (``weights="ema"`` for its EMA copy) to ``out``.

    Raises ``ValueError`` when ONNX Runtime disagrees with PyTorch by more than
    ``max_abs_diff`` on an input of another size than the traced one (the file is kept for
    inspection) and :class:`~mlb.checkpoint.CheckpointError` for a bad checkpoint.
    """
    model, _ = load_model(checkpoint, weights=weights, device="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _export_graph(model, out, opset=opset)
    shape = (2, 3, *CHECK_SIZE)
    difference = check_onnx(model, out, shape=shape)
    if not difference <= max_abs_diff:
        raise ValueError(
            f"{out}: ONNX Runtime differs from PyTorch by {difference:.3g} on a {shape} input "
            f"(expected <= {max_abs_diff}); the exported graph is wrong"
        )
    return ExportReport(
        path=str(out), checkpoint=os.fspath(checkpoint), weights=weights, opset=opset,
        max_abs_diff=difference, check_shape=shape, size_bytes=out.stat().st_size,
    )
