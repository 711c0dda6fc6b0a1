"""Row 8 (CUDA only): relabel throughput and student FPS on a GPU.

8a is row 1 on the GPU at the paper's settings: the ResNet-101 teacher at 512 px with mixed
precision (bfloat16 autocast, float16 where bf16 is missing) and channels-last tensors, the
defaults of ``mlb.labels.relabel`` on CUDA. 8b-8d time each student's forward on one 512x512
frame in PyTorch with the same settings (and with ONNX Runtime's CUDA provider when it is
installed), next to the paper's V100 figures (ONNX Runtime; 58.3 / 222.2 / 328.9 FPS):
different GPUs and runtimes, so they are reported, not judged.
"""

from __future__ import annotations

import time

import onnxruntime
import torch

from mlb.checkpoint import load_model
from mlb.experiments.bench.config import GpuBench, RelabelBench, Repeats
from mlb.experiments.bench.measure import time_calls
from mlb.experiments.bench.relabel import bench_relabel
from mlb.experiments.bench.report import BenchRow, Figure
from mlb.experiments.bench.students import PAPER_GPU_FPS, exported
from mlb.experiments.bench.workspace import Workspace
from mlb.export import onnx_session, run_onnx
from mlb.inference import autocast_dtype, prepare_model

__all__ = ["bench_gpu", "student_fps_gpu"]

_CUDA_PROVIDER = "CUDAExecutionProvider"


def student_fps_gpu(model: torch.nn.Module, size: int, timing: Repeats) -> float:
    """Frames/s of ``model`` (already on CUDA, eval) on one ``size`` x ``size`` frame with
    autocast and channels-last, CUDA work synchronised in the timings."""
    device = next(model.parameters()).device
    image = torch.rand(1, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    dtype = autocast_dtype(device, amp=True)

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            model(image)

    return 1.0 / time_calls(forward, timing).median


def bench_gpu(size: GpuBench, workspace: Workspace) -> list[BenchRow]:
    """8a: relabel vs teacher forward on CUDA; 8b-8d: student FPS vs the paper's V100."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench_gpu needs a CUDA device; the runner skips it without one")
    relabel = bench_relabel(RelabelBench(
        teacher=size.teacher, images=size.images, image_size=size.image_size,
        short_side=size.short_side, batch_size=size.batch_size,
        shard_size=max(1, size.images // 2),
        timing=size.timing.model_copy(update={"warmup": 1, "repeats": 2})), workspace)[0]
    rows = [relabel.model_copy(update={
        "id": "8a", "title": "GPU relabel (mixed precision, channels-last) vs forward"})]
    ort_cuda = _CUDA_PROVIDER in onnxruntime.get_available_providers()
    for letter, name in zip("bcd", size.students, strict=True):
        rows.append(_student_row(f"8{letter}", name, size, workspace, ort_cuda=ort_cuda))
    return rows


def _student_row(row_id: str, name: str, size: GpuBench, workspace: Workspace, *,
                 ort_cuda: bool) -> BenchRow:
    started = time.perf_counter()
    model, _ = load_model(workspace.checkpoint(name))
    fps = student_fps_gpu(prepare_model(model, device="cuda"), size.size, size.timing)
    details: dict[str, object] = {"gpu": torch.cuda.get_device_name(0),
                                  "paper_v100_fps": PAPER_GPU_FPS.get(name)}
    if ort_cuda:
        session = onnx_session(exported(workspace, name).path,
                               providers=[_CUDA_PROVIDER, "CPUExecutionProvider"])
        pixels = torch.rand(1, 3, size.size, size.size).numpy()
        details["ort_cuda_fps"] = 1.0 / time_calls(lambda: run_onnx(session, pixels),
                                                   size.timing).median
    paper = PAPER_GPU_FPS.get(name)
    return BenchRow(
        id=row_id, title=f"{name} FPS on the GPU vs the paper's V100",
        compared=f"{name} PyTorch FPS (autocast, channels-last) vs paper V100 ORT FPS",
        figure_a=Figure(name=name, value=fps, unit="FPS"),
        figure_b=Figure(name="paper V100", value=paper or 0.0, unit="FPS"),
        ratio=fps / paper if paper else None, target=None, passed=None,
        why="reported: another GPU and runtime than the paper's",
        method=(f"One {size.size}x{size.size} frame (batch 1), untrained weights, "
                f"{size.timing.warmup} warm-up and {size.timing.repeats} timed calls, CUDA "
                "synchronised; median."),
        details=details, seconds=time.perf_counter() - started)
