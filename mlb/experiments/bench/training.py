"""Rows 2 and 7: student training from the label cache.

Row 2 compares the offline scheme (the student reads cached blended labels) with the
reference's online scheme, where every batch first goes through the teacher and the blend.
The online scheme is implemented here as the baseline, from the real pieces: the same
augmentation, the teacher's forward, :func:`mlb.blend.blend_labels_with`, and the same
:func:`mlb.train.loop.train_one_step` with :func:`mlb.train.student.student_loss`. (The
reference feeds the teacher a weakly and the student a strongly augmented view; here both see
the same view, which changes nothing in the cost.) If reading the cache costs nothing, the
offline scheme is ``1 + t_teacher / t_student_step`` times faster; the target is 90% of that.

Row 7 compares how many samples per second the training loader delivers (image decode, cached
labels, strong augmentation; default number of loader workers) with how many the student step
consumes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mlb.blend import BlendConfig, blend_labels_with
from mlb.checkpoint import load_model
from mlb.data.augment import AugmentConfig, strong_preset
from mlb.data.corpus import find_segmentation_samples
from mlb.data.datasets import SegmentationDataset
from mlb.device import resolve_device
from mlb.experiments.bench.config import LoaderBench, TrainBench
from mlb.experiments.bench.measure import Timing, synchronize, timed
from mlb.experiments.bench.report import BenchRow, Figure, Target, judge
from mlb.experiments.bench.workspace import LabelSet, Workspace
from mlb.inference import autocast_dtype, prepare_model
from mlb.losses import LossConfig
from mlb.models import MattingOutput, build_model
from mlb.train.config import DEFAULT_LR, StudentRequest, TrainConfig
from mlb.train.loop import Batch, batches, build_optimizer, train_one_step
from mlb.train.student import student_dataset, student_loss

__all__ = ["StudentStep", "bench_loader", "bench_training", "online_step", "teacher_labels"]

IDEAL_FRACTION = 0.9
LOADER_TARGET = Target(op=">=", value=3.0)
# The cache's labels come from a cheap teacher at a low resolution: the student step costs
# the same whatever the label values are, and the labels are stored at the photo's size.
CACHE_TEACHER = "unet_r18_w05"
CACHE_SHORT_SIDE = 64


def teacher_labels(teacher: nn.Module, image: Tensor, coarse_mask: Tensor, *,
                   blend: BlendConfig, amp: bool) -> dict[str, Tensor]:
    """The online scheme's labels: teacher forward (no grad), then the MLB blend.

    ``image`` ``(B, 3, H, W)`` in [0, 1] and ``coarse_mask`` ``(B, 1, H, W)`` on the
    teacher's device -> ``blended_alpha`` and ``blended_boundary``, ``(B, 1, H, W)`` float32.
    """
    dtype = autocast_dtype(image.device, amp=amp)
    with torch.no_grad():
        with torch.autocast(image.device.type, dtype=dtype, enabled=dtype is not None):
            output = teacher(image)
        alpha = output.alpha.float().clamp(0.0, 1.0)
        boundary = torch.sigmoid(output.boundary_logit.float())
        # Antialiased resizing in the augmentation can leave the mask an ulp above 1, which
        # blend_labels rejects; the label is a mask in [0, 1] by definition.
        blended_alpha, blended_boundary = blend_labels_with(
            blend, alpha, boundary, coarse_mask.clamp(0.0, 1.0))
    return {"blended_alpha": blended_alpha, "blended_boundary": blended_boundary}


def _loss(prediction: MattingOutput, batch: Batch) -> dict[str, Tensor]:
    return student_loss(prediction, batch, loss=LossConfig())


class StudentStep:
    """A fresh student, its optimiser and the loop settings: one ``step(batch)`` per call."""

    def __init__(self, name: str, config: TrainConfig, device: torch.device) -> None:
        model = build_model(name).to(device)
        if device.type == "cuda" and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.optimizer = build_optimizer(model, lr=DEFAULT_LR["student"],
                                         weight_decay=config.weight_decay)
        self.config, self.device = config, device

    def step(self, batch: Batch) -> dict[str, float]:
        return train_one_step(self.model, self.optimizer, batch, _loss,
                              lr=DEFAULT_LR["student"], config=self.config, device=self.device)


def online_step(student: StudentStep, teacher: nn.Module, batch: Batch, *,
                blend: BlendConfig) -> dict[str, float]:
    """The reference's training step: teacher and blend on the batch, then the student step."""
    device = student.device
    labels = teacher_labels(teacher, batch["image"].to(device), batch["coarse_mask"].to(device),
                            blend=blend, amp=student.config.amp)
    return student.step({**batch, **labels})


def _loader(dataset: Dataset, config: TrainConfig, steps: int, device: torch.device
            ) -> Iterator[Batch]:
    """Batches exactly as ``mlb.train.loop.fit`` reads them (workers and prefetch)."""
    return batches(dataset, config, start=0, stop=steps, device=device)


def _student_request(labels: LabelSet, student: str, config: TrainConfig,
                     augment: AugmentConfig, workspace: Workspace) -> StudentRequest:
    return StudentRequest(store=str(labels.store), labels=labels.version_id, model=student,
                          out=str(workspace.root / "unused-student.pt"), train=config,
                          augment=augment)


def _train_config(steps: int, batch_size: int, workers: int | None) -> TrainConfig:
    """The loop's defaults, except the batch and (when given) the loader workers."""
    config = TrainConfig(steps=steps, batch_size=batch_size)
    return config if workers is None else config.model_copy(update={"num_workers": workers})


def _crop_augment(crop: int) -> AugmentConfig:
    """Square crops of ``crop`` px from photos scaled to a short side of 1-1.5 x ``crop``."""
    return AugmentConfig(short_side=crop, crop_sizes=(crop,), output_size=crop)


def _chunk(step: Callable[[Batch], object], batches: Iterator[Batch], steps: int) -> float:
    """Seconds for ``steps`` steps, each reading its batch from ``batches`` (loader included)."""
    def run() -> None:
        for _ in range(steps):
            step(next(batches))
    return timed(run)


def bench_training(size: TrainBench, workspace: Workspace) -> list[BenchRow]:
    """Row 2: steps/s from the cache over steps/s of the online scheme, against the ideal."""
    started = time.perf_counter()
    corpus = workspace.corpus(count=size.images, size=size.image_size)
    labels = workspace.label_set(corpus, teacher=CACHE_TEACHER, short_side=CACHE_SHORT_SIDE)
    augment = _crop_augment(size.crop)
    total = 1 + size.warmup_steps + size.rounds * size.steps
    config = _train_config(total, size.batch_size, size.workers)
    device = resolve_device(config.device)
    cached = _loader(student_dataset(_student_request(labels, size.student, config, augment,
                                                      workspace)), config, total, device)
    samples = find_segmentation_samples(corpus.images, corpus.masks).samples
    online = _loader(SegmentationDataset(samples, transform=strong_preset(augment)), config,
                     total, device)
    teacher = prepare_model(load_model(workspace.checkpoint(size.teacher))[0], device=device)
    offline_student, online_student = (StudentStep(size.student, config, device) for _ in "ab")
    blend = BlendConfig()
    cached_batch, online_batch = next(cached), next(online)  # in memory, for t_step, t_teacher
    image, mask = online_batch["image"].to(device), online_batch["coarse_mask"].to(device)

    def online_call(batch: Batch) -> None:
        online_step(online_student, teacher, batch, blend=blend)

    _chunk(offline_student.step, cached, size.warmup_steps)
    _chunk(online_call, online, size.warmup_steps)
    measurements = {
        "offline_s": lambda: _chunk(offline_student.step, cached, size.steps) / size.steps,
        "online_s": lambda: _chunk(online_call, online, size.steps) / size.steps,
        "teacher_s": lambda: timed(lambda: teacher_labels(teacher, image, mask, blend=blend,
                                                          amp=config.amp)),
        "step_s": lambda: timed(lambda: offline_student.step(cached_batch)),
    }
    rounds = []
    for index in range(size.rounds):  # the order alternates so that load drift cancels
        order = list(measurements) if index % 2 == 0 else list(reversed(measurements))
        rounds.append({name: measurements[name]() for name in order})
    synchronize()
    return [_training_row(size, rounds, config, str(device),
                          time.perf_counter() - started)]


def _training_row(size: TrainBench, rounds: list[dict[str, float]], config: TrainConfig,
                  device: str, seconds: float) -> BenchRow:
    workers, prefetch = config.num_workers, config.prefetch

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    ratios = [r["online_s"] / r["offline_s"] for r in rounds]
    ideals = [1.0 + r["teacher_s"] / r["step_s"] for r in rounds]
    ratio, ideal = statistics.median(ratios), statistics.median(ideals)
    target = Target(op=">=", value=round(IDEAL_FRACTION * ideal, 3))
    passed = judge(ratio, target)
    loader_share = 1.0 - median("step_s") / median("offline_s")
    why = None if passed else (
        f"an offline step took {median('offline_s'):.2f} s against {median('step_s'):.2f} s "
        f"for the step on a batch already in memory: reading the cache (decode, labels, "
        f"augmentation) is {loader_share:.0%} of the step with {workers} loader workers "
        f"and {prefetch} batches read ahead, "
        "and the online scheme hides the same reading behind a much longer step")
    return BenchRow(
        id="2", title="Student training from the cache vs online teacher",
        compared=(f"{size.student} steps/s from the cache vs online with teacher "
                  f"{size.teacher} (target {IDEAL_FRACTION:.0%} of ideal {ideal:.2f})"),
        figure_a=Figure(name="offline", value=1.0 / median("offline_s"), unit="steps/s"),
        figure_b=Figure(name="online", value=1.0 / median("online_s"), unit="steps/s"),
        ratio=ratio, target=target, passed=passed, why=why,
        method=(f"{size.images} synthetic {size.image_size}x{size.image_size} photos, strong "
                f"augmentation to {size.crop}x{size.crop} crops, batch {size.batch_size}, "
                f"student {size.student}, untrained teacher {size.teacher}, on {device}. "
                "Both schemes read through the training loader (seeded samples, "
                f"{workers} workers, {prefetch} batches read ahead in a thread) and call "
                "mlb.train.loop.train_one_step; "
                f"{size.warmup_steps} warm-up steps each, then {size.rounds} rounds of "
                f"{size.steps} offline steps, {size.steps} online steps, one teacher forward "
                "and blend (t_teacher) and one student step on an in-memory batch "
                "(t_student_step), in "
                "alternating order. Ratio and ideal 1 + t_teacher / t_student_step are "
                "medians of per-round values. The cache was labelled by an untrained "
                f"{CACHE_TEACHER} (label values do not change the step's cost)."),
        details={"ideal": round(ideal, 3), "fraction_of_ideal": round(ratio / ideal, 3),
                 "round_ratios": [round(r, 3) for r in ratios],
                 "round_ideals": [round(i, 3) for i in ideals],
                 "rounds": [{key: round(value, 4) for key, value in r.items()}
                            for r in rounds],
                 "loader_workers": workers, "prefetch": prefetch, "device": device},
        seconds=seconds)


# --------------------------------------------------------------------------- row 7


def bench_loader(size: LoaderBench, workspace: Workspace) -> list[BenchRow]:
    """Row 7: samples/s the label-set loader delivers over samples/s the step consumes."""
    started = time.perf_counter()
    corpus = workspace.corpus(count=size.images, size=size.image_size)
    labels = workspace.label_set(corpus, teacher=CACHE_TEACHER, short_side=CACHE_SHORT_SIDE)
    augment = AugmentConfig() if size.crop is None else _crop_augment(size.crop)
    rounds = size.timing.repeats
    total = 1 + size.timing.warmup + rounds * size.loader_batches
    config = _train_config(total, size.batch_size, size.workers)
    device = resolve_device(config.device)
    dataset = student_dataset(_student_request(labels, size.student, config, augment,
                                               workspace))
    batches = _loader(dataset, config, total, device)
    batch = next(batches)  # starts the workers (if any); also the step's in-memory batch
    student = StudentStep(size.student, config, device)
    for _ in range(size.timing.warmup):
        next(batches)
        student.step(batch)
    load_seconds, step_seconds = [], []
    for _ in range(rounds):
        load_seconds.append(timed(lambda: [next(batches) for _ in range(size.loader_batches)])
                            / size.loader_batches)
        step_seconds.append(timed(lambda: student.step(batch)))
    load, step = Timing(tuple(load_seconds)), Timing(tuple(step_seconds))
    return [_loader_row(size, augment, load, step, config, str(device),
                        time.perf_counter() - started)]


def _loader_row(size: LoaderBench, augment: AugmentConfig, load: Timing, step: Timing,
                config: TrainConfig, device: str, seconds: float) -> BenchRow:
    ratios = [s / b for s, b in zip(step.seconds, load.seconds, strict=True)]
    ratio = statistics.median(ratios)
    passed = judge(ratio, LOADER_TARGET)
    crop = augment.output_size or max(augment.crop_sizes)
    workers = config.num_workers
    return BenchRow(
        id="7", title="Label-set loader vs student step",
        compared=f"loader samples/s vs {size.student} step samples/s ({workers} workers)",
        figure_a=Figure(name="loader", value=size.batch_size / load.median, unit="samples/s"),
        figure_b=Figure(name="step", value=size.batch_size / step.median, unit="samples/s"),
        ratio=ratio, target=LOADER_TARGET, passed=passed,
        why=None if passed else (
            f"one batch takes {load.median:.2f} s to read against {step.median:.2f} s to "
            "train on"),
        method=(f"{size.images} synthetic {size.image_size}x{size.image_size} JPEG photos "
                "with cached labels (mlb.labels.dataset.LabelSetDataset via "
                "mlb.train.student.student_dataset: file hash check, decode, label read, "
                f"strong augmentation to {crop}x{crop}), batch {size.batch_size}, through the "
                f"training loader with {workers} workers, against "
                f"mlb.train.loop.train_one_step of {size.student} on a batch in memory, on "
                f"{device}. {size.timing.repeats} rounds of {size.loader_batches} loader "
                "batches then one step; medians."),
        details={"load_per_batch": load.summary(), "step": step.summary(),
                 "round_ratios": [round(r, 3) for r in ratios], "loader_workers": workers,
                 "augment": augment.model_dump(mode="json"), "device": device},
        seconds=seconds)
