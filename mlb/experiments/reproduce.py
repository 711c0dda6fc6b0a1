"""The paper's central comparison, reproduced on the built-in benchmark (method.md section 1).

One call runs, for every seed, the whole MLB recipe and its ablations on synthetic data, and
scores every model on natural-domain validation images with true alpha:

    teacher trained on segmentation only        (pre-training on coarse masks, MSE)
    teacher fine-tuned on composites             (the MLB teacher)
    MLB student: soft blend, EMA round           (round 1 on the teacher's labels, then the
                                                  round-1 EMA relabels, round 2 on those)
    ablations: hard blend / no EMA round / weak augmentation only
    DDC only (no alpha labels)                   (known + 10 x DDC on trimaps from masks)
    MLB student + DDC term

Our choices, all in :class:`ReproduceConfig`: the data are generated once (``data_seed``)
and the seeds vary the training only; every student starts from the fine-tuned teacher (so
the EMA copy is a valid next teacher); "no EMA" is one round with the same total student
steps as the two-round runs, so every student row spends the same compute; the DDC-only
model starts from the segmentation-only teacher, which saw no alpha either.

The target (issue 5): the MLB student beats the fine-tuned teacher on whole-region MSE by
at least 20% and is no worse than the segmentation-only teacher on boundary MSE.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from tqdm import tqdm

from mlb.blend import BlendConfig
from mlb.config import FrozenConfig
from mlb.data.augment import AugmentConfig
from mlb.data.synth import make_composite_corpus, make_natural_corpus
from mlb.data.trimap import DEFAULT_KERNEL_RANGE
from mlb.ddc import REFERENCE_WINDOW
from mlb.evaluate import EvaluateRequest, evaluate_checkpoint
from mlb.experiments.reproduce_networks import network_rows, train_network_rows
from mlb.labels.relabel import relabel
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.labels.score import score_label_version
from mlb.losses import LossConfig
from mlb.train import (
    DdcRequest,
    StudentRequest,
    TeacherRequest,
    TrainConfig,
    train_ddc,
    train_student,
    train_teacher,
)
from mlb.train.teacher import pretrain_path

__all__ = [
    "PRESETS",
    "ROWS",
    "DomainGapReport",
    "ReproduceConfig",
    "ReproduceReport",
    "domain_gap",
    "reproduce",
]

# Row key -> label, in table order.
ROWS: dict[str, str] = {
    "seg_teacher": "teacher trained on segmentation only",
    "teacher": "teacher fine-tuned on composites",
    "mlb": "MLB student (soft blend, EMA round)",
    "hard": "ablation: hard blend",
    "no_ema": "ablation: no EMA round",
    "weak_aug": "ablation: no strong augmentation",
    "ddc": "DDC only (no alpha labels)",
    "mlb_ddc": "MLB student + DDC term",
}
COLUMNS: dict[str, str] = {
    "mse": "whole MSE",
    "mse_boundary": "boundary MSE",
    "sad": "whole SAD",
    "sad_boundary": "boundary SAD",
}
# The label-quality table. Blended rows: row -> (student row whose label versions it reads,
# round index); the coarse masks come with the first blended row's score.
BLENDED_ROWS: dict[str, tuple[str, int]] = {
    "soft_r1": ("mlb", 0),
    "hard_r1": ("hard", 0),
    "soft_r2": ("mlb", 1),
}
LABEL_ROWS: dict[str, str] = {
    "coarse_mask": "coarse masks",
    "teacher": "fine-tuned teacher's prediction",
    "soft_r1": "soft-blended labels, round 1 (teacher)",
    "hard_r1": "hard-blended labels, round 1 (teacher)",
    "soft_r2": "soft-blended labels, round 2 (EMA of the round-1 student)",
}
LABEL_COLUMNS: dict[str, str] = {**COLUMNS, "b_boundary": "b inside boundary",
                                  "b_elsewhere": "b elsewhere"}
# Issue 5's target: at least 20% lower whole-region MSE than the fine-tuned teacher.
WHOLE_MSE_GAIN = 0.20


class ReproduceConfig(FrozenConfig):
    """Sizes and recipe of the reproduction; presets in :data:`PRESETS`."""

    work: str = ".mlb-work/reproduce"
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1)
    data_seed: int = 0
    size: int = Field(96, ge=32)
    """Side of the synthetic images (px)."""
    composite_count: int = Field(120, ge=2)
    natural_count: int = Field(320, ge=2)
    validation_count: int = Field(48, ge=1)
    model: str = "unet_r18_w05"
    batch_size: int = Field(8, ge=1)
    crop: int = Field(64, ge=16)
    """Training crop side (px); crops are taken after random scaling of the short side."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate of pre-training, students and DDC."""
    finetune_lr: float = Field(3e-4, gt=0)
    """Teacher fine-tuning on composites: gentler, as in the paper (5e-5 after 1e-4), so the
    teacher keeps what pre-training on natural images taught it."""
    pretrain_steps: int = Field(1000, ge=1)
    """The paper pre-trains 20x longer than it fine-tunes. At 300 pre-training + 300
    fine-tuning steps the teacher's natural-domain boundary MSE was 217 against 122 for the
    mask-only teacher; at 1000 + 400 it was 186 against 113 (seed 0)."""
    teacher_steps: int = Field(1500, ge=1)
    """Fine-tuning steps on composites. The teacher's boundary detail is what MLB transfers,
    and it comes late: at 400 steps its boundary MSE was 138 even on held-out composites and
    the soft-blended labels scored 134 on the natural corpus's boundary, worse than what the
    segmentation-only teacher predicts (113); at 1500 steps (with ``boundary_weight`` 1) the
    labels scored 109 ± 5 over three seeds (the README's label table)."""
    boundary_weight: float = Field(1.0, ge=0)
    """lambda of the teacher and student loss. The paper's 0.01 leaves this small network's
    boundary head near its base rate after a few hundred steps (mean b 0.21 on true boundary
    pixels, 0.11 elsewhere), so the soft blend takes little from the teacher; at 1 it rose to
    0.27 (400 steps) and 0.35 (1500 steps)."""
    student_steps: int = Field(800, ge=2)
    """Total student steps; the two-round rows spend half of them in each round. With 200
    steps a round the round-2 student reached 122-123 boundary MSE (seeds 0, 1) on labels
    that score 89 on the training corpus; with 400 it reached 120 and 110."""
    ddc_steps: int = Field(400, ge=1)
    ddc_weight: float = Field(0.1, ge=0)
    """Weight of the (known + 10 x DDC) term in the MLB + DDC student."""
    ddc_window: int = Field(REFERENCE_WINDOW, ge=1)
    """DDC's window side, and the candidates kept per pixel (the reference keeps as many as
    the side), for the DDC-only row and the MLB + DDC student. The reference's 11 was made
    for 512 px crops; ``mlb.ddc.window_for(size)`` scales it (3 at 96 px). Trial at 96 px
    (``python -m mlb.experiments.science_trials ddc``, 200 steps from a 300-step
    segmentation-only teacher scoring 100.9 whole / 132.3 boundary; docs/science-notes.md):
    window 11, kernels 1-29: 101.6 / 161.5; window 3, kernels 3-4 (both scaled): 96.3 / 203.4.
    The scaled recipe keeps the known region up to a pixel or two from the mask edge, and
    the known L1 then teaches the mask's own sharp edge (the coarse masks score 193 on the
    boundary), so it stays at the reference's values."""
    trimap_kernel_range: tuple[int, int] = DEFAULT_KERNEL_RANGE
    """Erosion kernels of DDC's trimaps (px): the reference's 1-29, made for 640 px images
    (``kernel_range_for(size)`` scales them, 3-4 px at 96 px; trial above)."""
    threads: int | None = Field(None, ge=1)
    """torch intra-op threads for this process (None: torch's default, one per core). On a
    shared machine 1 is often faster: busy-waiting OpenMP threads thrash when the cores are
    oversubscribed (measured 4x slower training steps at 2 threads under load)."""
    networks: tuple[str, ...] = ("modnet",)
    """Other architectures trained teacher-style and as MLB students on the teacher's labels
    (:mod:`mlb.reproduce_networks`; the paper's Table 6)."""
    ema_momentum: float = Field(0.99, gt=0, lt=1)
    """Per-step momentum. 0.999 suits the paper's 20K steps; a few hundred steps need less
    inertia for the EMA to move away from its initial weights at all."""

    @property
    def augment(self) -> AugmentConfig:
        # Scale the short side to the image size, then multi-scale crops around ``crop``.
        return AugmentConfig(short_side=self.size, scale_range=(1.0, 1.3),
                             crop_sizes=(self.crop, int(self.crop * 1.25)),
                             output_size=self.crop)

    @property
    def loss(self) -> LossConfig:
        return LossConfig(boundary_weight=self.boundary_weight)

    @property
    def ddc_settings(self) -> dict[str, int]:
        """``LossConfig`` fields of DDC's window (the kept candidates follow the side)."""
        return {"ddc_window": self.ddc_window, "ddc_neighbours": self.ddc_window}

    def train(self, steps: int, seed: int, *, lr: float | None = None) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=self.batch_size, lr=lr or self.lr, seed=seed,
                           warmup_steps=max(1, steps // 20), checkpoint_every=100,
                           ema_momentum=self.ema_momentum, log_every=25)


PRESETS: dict[str, ReproduceConfig] = {
    # A minute or two: the same grid at toy size (the test suite and quick looks).
    "tiny": ReproduceConfig(seeds=(0,), size=48, composite_count=8, natural_count=16,
                            validation_count=4, crop=32, batch_size=2, pretrain_steps=4,
                            teacher_steps=4, student_steps=4, ddc_steps=4),
    # The README's table: about 6900 training steps per seed (teachers 2500, DDC 400,
    # students 5 x 800), about 70 min for three seeds side by side on a 2-core CPU.
    "cpu": ReproduceConfig(),
}


class ReproduceReport(FrozenConfig):
    """Per-seed metrics of every row, their mean and spread, the table and the verdict."""

    config: ReproduceConfig
    per_seed: dict[str, dict[str, dict[str, float | None]]]
    """seed -> row -> metric -> value."""
    mean: dict[str, dict[str, float | None]]
    std: dict[str, dict[str, float | None]]
    whole_mse_gain: float | None
    """1 - MSE(mlb) / MSE(teacher), on the means."""
    boundary_ok: bool | None
    """MLB student's boundary MSE <= the segmentation-only teacher's, on the means."""
    target_met: bool | None
    seconds: float
    table: str
    labels_per_seed: dict[str, dict[str, dict[str, float | None]]]
    """seed -> label row -> metric -> value (see :data:`LABEL_ROWS`)."""
    labels_mean: dict[str, dict[str, float | None]]
    labels_std: dict[str, dict[str, float | None]]
    labels_table: str


Step = Callable[[str], None]


def _corpora(config: ReproduceConfig, root: Path) -> dict[str, Path]:
    """Generate (once) the matte corpus, the natural training set and the validation set."""
    paths = {"matte": root / "composite", "natural": root / "natural",
             "validation": root / "validation",
             "composite_validation": root / "composite-validation"}
    # Validation sets use other seeds: their people never appear in a training corpus.
    makers = {
        "matte": (make_composite_corpus, config.composite_count, config.data_seed, {}),
        "natural": (make_natural_corpus, config.natural_count, config.data_seed, {}),
        "validation": (make_natural_corpus, config.validation_count, config.data_seed + 1000,
                       {}),
        "composite_validation": (make_composite_corpus, config.validation_count,
                                 config.data_seed + 1000, {"with_images": True}),
    }
    for key, (make, count, seed, options) in makers.items():
        if not (paths[key] / "synth.json").is_file():
            make(paths[key], count=count, size=config.size, seed=seed, progress=False,
                 **options)
    return paths


def _teachers(config: ReproduceConfig, data: Mapping[str, Path], out: Path, seed: int
              ) -> dict[str, Path]:
    """Pre-train on the natural masks, then fine-tune on composites: both teachers."""
    teacher = out / "teacher.pt"
    train_teacher(TeacherRequest(
        matte=str(data["matte"]), pretrain_images=str(data["natural"] / "images"),
        pretrain_masks=str(data["natural"] / "masks"), model=config.model,
        out=str(teacher), pretrain_steps=config.pretrain_steps, pretrain_lr=config.lr,
        train=config.train(config.teacher_steps, seed, lr=config.finetune_lr),
        augment=config.augment, loss=config.loss,
    ), resume=True, progress=False)
    return {"seg_teacher": pretrain_path(teacher), "teacher": teacher}


def _relabel(config: ReproduceConfig, data: Mapping[str, Path], store: Path, teacher: Path, *,
             mode: Literal["soft", "hard"], weights: Literal["model", "ema"] = "model",
             parent: str | None = None, ema_round: int = 0) -> str:
    relabel_config = RelabelConfig(blend=BlendConfig(mode=mode), inference={
        "short_side": config.size, "batch_size": 16, "device": "cpu"})
    summary = relabel(RelabelRequest(
        teacher=str(teacher), images=str(data["natural"] / "images"),
        masks=str(data["natural"] / "masks"), store=str(store), weights=weights,
        corpus="natural", parent_version=parent, ema_round=ema_round, config=relabel_config,
    ), progress=False)
    return summary.version_id


def _student(config: ReproduceConfig, store: Path, labels: str, *, init: Path, out: Path,
             steps: int, seed: int, strong: bool = True, ddc_weight: float = 0.0) -> Path:
    loss = LossConfig(**{**config.loss.model_dump(), **config.ddc_settings})
    train_student(StudentRequest(
        store=str(store), labels=labels, model=config.model, out=str(out), init=str(init),
        train=config.train(steps, seed), augment=config.augment, strong_augment=strong,
        ema=True, ddc_weight=ddc_weight, loss=loss,
        trimap_kernel_range=config.trimap_kernel_range,
    ), resume=True, progress=False)
    return out


def _mlb_student(config: ReproduceConfig, data: Mapping[str, Path], out: Path, seed: int,
                 teacher: Path, *, name: str, mode: Literal["soft", "hard"] = "soft",
                 rounds: int = 2, strong: bool = True, ddc_weight: float = 0.0
                 ) -> tuple[Path, list[str]]:
    """Round 1 on the teacher's blended labels; each further round relabels with the last
    student's EMA copy (lineage: parent version, EMA round) and continues from it.

    Returns the last round's checkpoint and the label version of every round."""
    store = out / "labels"
    labels = _relabel(config, data, store, teacher, mode=mode)
    versions = [labels]
    steps = config.student_steps // rounds
    student = _student(config, store, labels, init=teacher, out=out / f"{name}-r1.pt",
                       steps=steps, seed=seed, strong=strong, ddc_weight=ddc_weight)
    for ema_round in range(1, rounds):
        labels = _relabel(config, data, store, student, mode=mode, weights="ema",
                          parent=labels, ema_round=ema_round)
        versions.append(labels)
        student = _student(config, store, labels, init=student,
                           out=out / f"{name}-r{ema_round + 1}.pt", steps=steps,
                           seed=seed + 1000 * ema_round, strong=strong, ddc_weight=ddc_weight)
    return student, versions


def _ddc_only(config: ReproduceConfig, data: Mapping[str, Path], out: Path, seed: int,
              init: Path) -> Path:
    checkpoint = out / "ddc.pt"
    train_ddc(DdcRequest(
        images=str(data["natural"] / "images"), masks=str(data["natural"] / "masks"),
        model=config.model, out=str(checkpoint), init=str(init),
        train=config.train(config.ddc_steps, seed), augment=config.augment,
        loss=LossConfig(**config.ddc_settings), trimap_kernel_range=config.trimap_kernel_range,
    ), resume=True, progress=False)
    return checkpoint


def _seed_models(config: ReproduceConfig, data: Mapping[str, Path], out: Path, seed: int,
                 step: Step) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Train every row's model for one seed; returns row key -> checkpoint, and student row
    key -> the label version of each of its rounds."""
    step("teachers")
    models = _teachers(config, data, out, seed)
    teacher = models["teacher"]
    variants = {
        "mlb": {},
        "hard": {"mode": "hard"},
        "no_ema": {"rounds": 1},
        "weak_aug": {"strong": False},
        "mlb_ddc": {"ddc_weight": config.ddc_weight},
    }
    versions: dict[str, list[str]] = {}
    for name, options in variants.items():
        step(name)
        models[name], versions[name] = _mlb_student(config, data, out, seed, teacher,
                                                    name=name, **options)
    step("ddc")
    models["ddc"] = _ddc_only(config, data, out, seed, models["seg_teacher"])
    return models, versions


def _label_quality(config: ReproduceConfig, data: Mapping[str, Path], store: Path,
                   teacher: Path, versions: Mapping[str, Sequence[str]]
                   ) -> dict[str, dict[str, float | None]]:
    """What the students learned from, scored against the natural corpus's true alpha: the
    coarse masks, the fine-tuned teacher's prediction, and the blended label versions."""
    natural = data["natural"]
    teacher_scores = evaluate_checkpoint(EvaluateRequest(
        model=str(teacher), images=str(natural / "images"), alphas=str(natural / "alphas"),
        inference={"short_side": config.size, "device": "cpu"}), progress=False).mean
    quality: dict[str, dict[str, float | None]] = {
        "teacher": {key: teacher_scores.get(key) for key in COLUMNS}}
    for row, (name, round_index) in BLENDED_ROWS.items():
        score = score_label_version(store, versions[name][round_index], natural / "alphas",
                                    progress=False)
        quality[row] = {key: score.mean["blended_alpha"].get(key) for key in COLUMNS}
        quality[row].update({f"b_{region}": value
                             for region, value in score.blend_weight.items()})
        quality.setdefault("coarse_mask", {key: score.mean["coarse_mask"].get(key)
                                           for key in COLUMNS})
    return {row: quality[row] for row in LABEL_ROWS}


def _score(config: ReproduceConfig, data: Mapping[str, Path], checkpoint: Path, *,
           domain: Literal["natural", "composite"] = "natural") -> dict[str, float | None]:
    """Mean metrics on the natural (default) or the composite validation set."""
    images, alphas = {
        "natural": (data["validation"] / "images", data["validation"] / "alphas"),
        "composite": (data["composite_validation"] / "images",
                      data["composite_validation"] / "alpha"),
    }[domain]
    report = evaluate_checkpoint(EvaluateRequest(
        model=str(checkpoint), images=str(images), alphas=str(alphas),
        inference={"short_side": config.size, "device": "cpu"},
    ), progress=False)
    return {key: report.mean.get(key) for key in COLUMNS}


def _spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    variance = sum((v - mean) ** 2 for v in finite) / max(1, len(finite) - 1)
    return mean, math.sqrt(variance) if len(finite) > 1 else 0.0


def _summarise(per_seed: Mapping[str, Mapping[str, Mapping[str, float | None]]],
               rows: Sequence[str] = tuple(ROWS), columns: Sequence[str] = tuple(COLUMNS)
               ) -> tuple[dict, dict]:
    """Mean and sample standard deviation over seeds, per row and column (a column a row
    does not have is None)."""
    mean: dict[str, dict[str, float | None]] = {}
    std: dict[str, dict[str, float | None]] = {}
    for row in rows:
        mean[row], std[row] = {}, {}
        for column in columns:
            values = [per_seed[seed][row].get(column) for seed in per_seed]
            mean[row][column], std[row][column] = _spread(values)
    return mean, std


def _cell(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _spread_table(header: str, rows: Mapping[str, str], columns: Mapping[str, str],
                  mean: Mapping, std: Mapping) -> list[str]:
    """Markdown lines: one row per ``rows`` key (its label first), cells "mean ± std"."""
    lines = [f"| {header} | " + " | ".join(columns.values()) + " |",
             "| --- |" + " --- |" * len(columns)]
    for row, label in rows.items():
        cells = [_cell(mean[row][c], std[row][c]) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render_table(mean: Mapping, std: Mapping, *, seeds: int, short_side: int,
                 rows: Mapping[str, str] = ROWS) -> str:
    lines = _spread_table("model", rows, COLUMNS, mean, std)
    lines.append("")
    lines.append(f"Mean ± standard deviation over {seeds} seed(s). Natural-domain validation "
                 f"images with true alpha, scored per image at the truth's resolution after "
                 f"resizing the short side to {short_side} for inference, then averaged. "
                 "MSE x1e3, SAD / 1000; boundary region: pixels with 0.05 < alpha < 0.95.")
    return "\n".join(lines)


def render_label_table(mean: Mapping, std: Mapping, *, seeds: int) -> str:
    lines = _spread_table("labels", LABEL_ROWS, LABEL_COLUMNS, mean, std)
    lines.append("")
    lines.append(f"Mean ± standard deviation over {seeds} seed(s). What the students learn "
                 "from, scored against the true alpha of the natural training corpus at "
                 "each image's resolution; b is the blend weight (blended_boundary), "
                 "averaged inside and outside the true boundary region 0.05 < alpha < 0.95. "
                 "MSE x1e3, SAD / 1000.")
    return "\n".join(lines)


def _verdict(mean: Mapping) -> tuple[float | None, bool | None, bool | None]:
    mlb, teacher, seg = mean["mlb"], mean["teacher"], mean["seg_teacher"]
    if None in (mlb["mse"], teacher["mse"], mlb["mse_boundary"], seg["mse_boundary"]):
        return None, None, None
    gain = 1.0 - mlb["mse"] / teacher["mse"]
    boundary_ok = mlb["mse_boundary"] <= seg["mse_boundary"]
    return gain, boundary_ok, gain >= WHOLE_MSE_GAIN and boundary_ok


def _set_threads(config: ReproduceConfig) -> None:
    if config.threads is not None:
        torch.set_num_threads(config.threads)


def reproduce(config: ReproduceConfig, *, progress: bool = True) -> ReproduceReport:
    """Run the comparison; resumable: finished checkpoints and label versions are reused and
    an interrupted training continues from its last periodic checkpoint."""
    started = time.perf_counter()
    _set_threads(config)
    root = Path(config.work)
    data = _corpora(config, root / "data")
    rows = {**ROWS, **network_rows(config)}
    bar = tqdm(total=len(config.seeds) * (len(ROWS) + 1 + len(config.networks)),
               desc="reproduce",
               disable=not progress)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    per_seed: dict[str, dict[str, dict[str, float | None]]] = {}
    labels: dict[str, dict[str, dict[str, float | None]]] = {}
    for seed in config.seeds:
        out = root / f"seed-{seed}"
        models, versions = _seed_models(config, data, out, seed, step)
        step("other networks")
        # the labels of the MLB row's first round, in the seed's one label store
        models.update(train_network_rows(config, data, out, seed, store=out / "labels",
                                         labels=versions["mlb"][0]))
        per_seed[str(seed)] = {row: _score(config, data, models[row]) for row in rows}
        labels[str(seed)] = _label_quality(config, data, out / "labels", models["teacher"],
                                           versions)
        step("evaluate")
    bar.close()
    mean, std = _summarise(per_seed, tuple(rows))
    labels_mean, labels_std = _summarise(labels, tuple(LABEL_ROWS), LABEL_COLUMNS)
    gain, boundary_ok, met = _verdict(mean)
    report = ReproduceReport(
        config=config, per_seed=per_seed, mean=mean, std=std, whole_mse_gain=gain,
        boundary_ok=boundary_ok, target_met=met, seconds=time.perf_counter() - started,
        table=render_table(mean, std, seeds=len(config.seeds), short_side=config.size,
                           rows=rows),
        labels_per_seed=labels, labels_mean=labels_mean, labels_std=labels_std,
        labels_table=render_label_table(labels_mean, labels_std, seeds=len(config.seeds)),
    )
    (root / "report.json").write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    return report


class DomainGapReport(FrozenConfig):
    """A model trained on composites only, scored on both domains (issue 3's measurement)."""

    config: ReproduceConfig
    per_seed: dict[str, dict[str, dict[str, float | None]]]
    """seed -> domain ("composite" / "natural") -> metric -> value."""
    mean: dict[str, dict[str, float | None]]
    std: dict[str, dict[str, float | None]]
    mse_ratio: float | None
    """Natural over composite whole-region MSE, on the means: the size of the gap."""
    seconds: float
    table: str


DOMAINS: dict[str, str] = {
    "composite": "composite validation (same domain as training)",
    "natural": "natural validation (photo-like scenes)",
}


def domain_gap(config: ReproduceConfig, *, progress: bool = True) -> DomainGapReport:
    """Train on composites alone (no mask pre-training) and score on both domains.

    The same architecture, data sizes and steps as the reproduction's teacher; both
    validation sets hold people no training set has.
    """
    started = time.perf_counter()
    _set_threads(config)
    root = Path(config.work)
    data = _corpora(config, root / "data")
    per_seed: dict[str, dict[str, dict[str, float | None]]] = {}
    for seed in tqdm(config.seeds, desc="domain gap", disable=not progress):
        checkpoint = root / f"seed-{seed}" / "composite-only.pt"
        train_teacher(TeacherRequest(
            matte=str(data["matte"]), model=config.model, out=str(checkpoint),
            train=config.train(config.teacher_steps, seed), augment=config.augment,
            loss=config.loss,
        ), resume=True, progress=False)
        per_seed[str(seed)] = {domain: _score(config, data, checkpoint, domain=domain)
                               for domain in DOMAINS}
    mean, std = _summarise(per_seed, tuple(DOMAINS))
    natural, composite = mean["natural"]["mse"], mean["composite"]["mse"]
    ratio = natural / composite if natural is not None and composite else None
    lines = _spread_table("model trained on composites only, scored on", DOMAINS, COLUMNS,
                          mean, std)
    lines += ["", f"Mean ± standard deviation over {len(config.seeds)} seed(s); same metric "
              f"conventions as the reproduction table (short side {config.size})."]
    report = DomainGapReport(config=config, per_seed=per_seed, mean=mean, std=std,
                             mse_ratio=ratio, seconds=time.perf_counter() - started,
                             table="\n".join(lines))
    (root / "domain-gap.json").write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    return report
