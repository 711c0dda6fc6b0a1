"""Benchmark sizes: one frozen config per row family, composed into named presets.

``QUICK`` finishes in a few minutes on 2 CPU cores, ``FULL`` takes the sizes of the issue
(the relabel over 2,000 images, the ResNet-101 teacher at 512 px, the DDC loss timed at
batch 4) in about a quarter of an hour, ``TINY`` runs every row in seconds for the tests.
The figures that matter are ratios taken side by side in one run; the sizes only decide how
long the run takes and how much noise the medians have to absorb.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from mlb.config import FrozenConfig

__all__ = [
    "FULL",
    "PRESETS",
    "QUICK",
    "TINY",
    "BenchSize",
    "BlendBench",
    "DataParallelBench",
    "DdcBench",
    "GpuBench",
    "LoaderBench",
    "MemoryBench",
    "NetworksBench",
    "OnnxBench",
    "RelabelBench",
    "Repeats",
    "TrainBench",
]


class Repeats(FrozenConfig):
    """How often a measured call runs: ``warmup`` untimed, then ``repeats`` timed (median)."""

    warmup: int = Field(1, ge=0)
    repeats: PositiveInt = 3


class RelabelBench(FrozenConfig):
    """Row 1: the full relabel pipeline vs the teacher's forward on the same batches."""

    teacher: str = "unet_r18_w05"
    images: PositiveInt = 16
    image_size: PositiveInt = 256
    """Side of the square synthetic photos; larger than ``short_side`` so resizing is real."""
    short_side: PositiveInt = 192
    batch_size: PositiveInt = 8
    shard_size: PositiveInt = 8
    """Smaller than ``images``: the writer must overlap the teacher, not only follow it."""
    timing: Repeats = Repeats(warmup=0, repeats=8)
    """Rounds of (forward, relabel); many short rounds absorb a shared machine's noise
    (single rounds scattered from 0.8 to 1.3 on a 2-core machine shared with other jobs)."""


class TrainBench(FrozenConfig):
    """Row 2: student steps from the cache vs the online scheme (teacher on every batch)."""

    teacher: str = "unet_r101"
    student: str = "unet_r18_w05"
    images: PositiveInt = 16
    image_size: PositiveInt = 320
    batch_size: PositiveInt = 4
    crop: PositiveInt = 192
    """Training crops are 512 px by default; below ~192 px the per-sample costs of reading
    (decode, label read) weigh more against the step than in any real run."""
    steps: PositiveInt = 1
    """Steps per scheme per round (each round measures both schemes back to back)."""
    rounds: PositiveInt = 6
    """Even: the order of the measurements alternates from round to round."""
    workers: int | None = Field(None, ge=0)
    """Loader workers of both schemes; None: the training default (``TrainConfig``)."""
    warmup_steps: int = Field(2, ge=0)
    """Per scheme; the first CPU training steps are up to twice as slow as later ones."""


class BlendBench(FrozenConfig):
    """Row 3: batched ``blend_labels`` vs the per-image numpy baseline, and vs a copy."""

    batch: PositiveInt = 16
    size: PositiveInt = 512
    timing: Repeats = Repeats(warmup=2, repeats=9)


class DdcBench(FrozenConfig):
    """Row 4: memory-lean ``ddc_loss`` vs the unfold reference (forward + backward)."""

    batch: PositiveInt = 4
    size: PositiveInt = 512
    """Peak memory and values are measured at ``batch`` x ``size`` x ``size``."""
    time_batch: PositiveInt | None = 1
    """Batch of the timed calls (None: ``batch``); each call at batch 4, 512 px takes ~15 s
    on 2 cores, too long for ``--quick``'s repeats."""
    timing: Repeats = Repeats(warmup=1, repeats=3)


class OnnxBench(FrozenConfig):
    """Row 5: students with ONNX Runtime on the CPU at batch 1, and PyTorch eager."""

    models: tuple[str, str, str] = ("unet_r18_w05", "unet_r18", "unet_r101")
    """Half-width ResNet-18, ResNet-18, ResNet-101: the paper's ratios are against the last."""
    size: PositiveInt = 512
    timing: Repeats = Repeats(warmup=1, repeats=3)
    """ONNX Runtime: rounds over the three networks (ResNet-101 takes seconds per frame on a
    small CPU, which bounds the rounds of ``--quick``)."""
    eager_timing: Repeats = Repeats(warmup=1, repeats=1)
    """PyTorch eager, reported for comparison only (several times slower on the CPU)."""


class NetworksBench(FrozenConfig):
    """Row 10: any student network (issue 17) side by side with ONNX Runtime on the CPU."""

    models: tuple[str, ...] = ("unet_r18_w05", "unet_r18", "modnet", "unet_mobilenetv3",
                               "unet_r101")
    """The last is the reference every other network's FPS is divided by."""
    fast: str = "unet_r18_w05"
    slow: str = "modnet"
    """Row 10a: ``fast`` FPS over ``slow`` FPS (goal: at least 3)."""
    size: PositiveInt = 512
    timing: Repeats = Repeats(warmup=1, repeats=3)


class MemoryBench(FrozenConfig):
    """Row 6: peak RSS of a relabel over ``large`` images vs over ``small`` images."""

    teacher: str = "unet_r18_w05"
    small: PositiveInt = 40
    large: PositiveInt = 400
    image_size: PositiveInt = 64
    short_side: PositiveInt = 64
    batch_size: PositiveInt = 8
    shard_size: PositiveInt = 64


class LoaderBench(FrozenConfig):
    """Row 7: samples/s the label-set loader delivers vs samples/s the student step uses."""

    student: str = "unet_r18_w05"
    images: PositiveInt = 16
    image_size: PositiveInt = 320
    batch_size: PositiveInt = 2
    loader_batches: PositiveInt = 4
    crop: int | None = None
    """None: the training defaults (``AugmentConfig()``: 512 px output); else a square crop."""
    workers: int | None = Field(None, ge=0)
    """Loader workers; None: the training default (``TrainConfig``)."""
    timing: Repeats = Repeats(warmup=1, repeats=2)


class GpuBench(FrozenConfig):
    """Row 8 (CUDA only): relabel with mixed precision + channels-last, student FPS."""

    teacher: str = "unet_r101"
    students: tuple[str, str, str] = ("unet_r101", "unet_r18", "unet_r18_w05")
    images: PositiveInt = 64
    image_size: PositiveInt = 640
    short_side: PositiveInt = 512
    batch_size: PositiveInt = 8
    size: PositiveInt = 512
    timing: Repeats = Repeats(warmup=5, repeats=30)


class DataParallelBench(FrozenConfig):
    """Row 9: student samples/s with ``processes`` data-parallel processes vs one."""

    student: str = "unet_r18_w05"
    images: PositiveInt = 16
    image_size: PositiveInt = 160
    crop: PositiveInt = 128
    batch_size: PositiveInt = 4
    """Per process: the N-process run trains N x the samples a step."""
    steps: PositiveInt = 30
    processes: int = Field(2, ge=2)
    threads: PositiveInt = 1
    """Torch threads per process: 1 on the 2-core CPU, so 2 processes can use both cores."""
    sync_bn: bool = True


class BenchSize(FrozenConfig):
    """Every row family's sizes under one preset name."""

    name: str
    relabel: RelabelBench = RelabelBench()
    train: TrainBench = TrainBench()
    blend: BlendBench = BlendBench()
    ddc: DdcBench = DdcBench()
    onnx: OnnxBench = OnnxBench()
    memory: MemoryBench = MemoryBench()
    loader: LoaderBench = LoaderBench()
    gpu: GpuBench = GpuBench()
    data_parallel: DataParallelBench = DataParallelBench()
    networks: NetworksBench = NetworksBench()


QUICK = BenchSize(name="quick")

FULL = BenchSize(
    name="full",
    # The paper's teacher at the paper's resolution (about 15 minutes on 2 idle cores).
    relabel=RelabelBench(teacher="unet_r101", images=8, image_size=640, short_side=512,
                         batch_size=4, shard_size=4, timing=Repeats(warmup=0, repeats=2)),
    train=TrainBench(images=32, image_size=512, batch_size=8, crop=192, steps=1, rounds=6),
    ddc=DdcBench(time_batch=None, timing=Repeats(warmup=1, repeats=3)),
    onnx=OnnxBench(timing=Repeats(warmup=2, repeats=7),
                   eager_timing=Repeats(warmup=1, repeats=3)),
    memory=MemoryBench(small=200, large=2000, image_size=128, short_side=128),
    networks=NetworksBench(timing=Repeats(warmup=2, repeats=7)),
    loader=LoaderBench(images=32, image_size=640, batch_size=4, loader_batches=8,
                       timing=Repeats(warmup=1, repeats=2)),
    data_parallel=DataParallelBench(image_size=320, crop=192, steps=40),
)

TINY = BenchSize(
    name="tiny",
    relabel=RelabelBench(images=6, image_size=48, short_side=32, batch_size=2, shard_size=4,
                         timing=Repeats(warmup=0, repeats=1)),
    train=TrainBench(teacher="unet_r18_w05", images=4, image_size=48, batch_size=2, crop=32,
                     steps=1, rounds=1, warmup_steps=0),
    blend=BlendBench(batch=2, size=32, timing=Repeats(warmup=0, repeats=1)),
    ddc=DdcBench(batch=2, size=24, time_batch=None, timing=Repeats(warmup=0, repeats=1)),
    onnx=OnnxBench(size=32, timing=Repeats(warmup=0, repeats=1),
                   eager_timing=Repeats(warmup=0, repeats=1)),
    memory=MemoryBench(small=2, large=6, image_size=32, short_side=32, batch_size=2,
                       shard_size=4),
    loader=LoaderBench(images=4, image_size=48, batch_size=2, loader_batches=2, crop=32,
                       timing=Repeats(warmup=0, repeats=1)),
    gpu=GpuBench(images=4, image_size=64, short_side=64, batch_size=2, size=64,
                 timing=Repeats(warmup=1, repeats=2)),
    data_parallel=DataParallelBench(images=4, image_size=48, crop=32, batch_size=2, steps=2),
    networks=NetworksBench(models=("unet_r18_w05", "modnet", "unet_mobilenetv3", "unet_r18"),
                           size=32, timing=Repeats(warmup=0, repeats=1)),
)

PRESETS: dict[str, BenchSize] = {size.name: size for size in (TINY, QUICK, FULL)}
