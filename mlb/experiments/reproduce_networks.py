"""Other architectures in the reproduction (the paper's Table 6: each matting model trained
with MLB improves on its own training): per network two rows,

    <net> fine-tuned teacher-style   pre-trained on the natural masks, fine-tuned on
                                     composites, exactly as the reproduction's teacher
    <net> as MLB student             from that checkpoint, trained on the main teacher's
                                     round-1 soft-blended labels for ``student_steps``

The student row keeps no EMA round: its architecture differs from the teacher's, so its EMA
copy is not the labels' teacher (``mlb train student`` keeps none either). Both rows see the
same data and start from the same pre-training; the difference is the labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlb.data.augment import AugmentConfig
from mlb.losses import LossConfig
from mlb.train import StudentRequest, TeacherRequest, TrainConfig, train_student, train_teacher

if TYPE_CHECKING:
    from mlb.experiments.reproduce_data import Corpora


class _Config(Protocol):  # the fields of ReproduceConfig used here (no import cycle)
    networks: tuple[str, ...]
    pretrain_steps: int
    teacher_steps: int
    student_steps: int
    lr: float
    finetune_lr: float

    @property
    def augment(self) -> AugmentConfig: ...

    @property
    def teacher_loss(self) -> LossConfig: ...

    @property
    def student_loss(self) -> LossConfig: ...

    def train(self, steps: int, seed: int, *, lr: float | None = None) -> TrainConfig: ...

    def wants(self, row: str) -> bool: ...


def network_rows(config: _Config) -> dict[str, str]:
    """Row key -> label for every network of ``config.networks``, in table order."""
    rows: dict[str, str] = {}
    for name in config.networks:
        rows[f"{name}_teacher"] = f"{name} fine-tuned teacher-style"
        rows[f"{name}_mlb"] = f"{name} as MLB student (soft blend, round 1 labels)"
    return rows


def train_network_rows(config: _Config, data: Corpora, out: Path, seed: int, *,
                       store: Path, labels: str, names: tuple[str, ...]) -> dict[str, Path]:
    """Train both rows of each network of ``names`` for one seed; row key -> checkpoint."""
    models: dict[str, Path] = {}
    for name in names:
        teacher = out / f"{name}-teacher.pt"
        train_teacher(TeacherRequest(
            matte=data.matte, pretrain_images=data.natural_images,
            pretrain_masks=data.natural_masks, model=name, out=str(teacher),
            pretrain_steps=config.pretrain_steps, pretrain_lr=config.lr,
            train=config.train(config.teacher_steps, seed, lr=config.finetune_lr),
            augment=config.augment, loss=config.teacher_loss,
        ), resume=True, progress=False)
        models[f"{name}_teacher"] = teacher
        if not config.wants(f"{name}_mlb"):
            continue
        student = out / f"{name}-mlb.pt"
        train_student(StudentRequest(
            store=str(store), labels=labels, model=name, out=str(student), init=str(teacher),
            train=config.train(config.student_steps, seed), augment=config.augment,
            strong_augment=True, ema=False, loss=config.student_loss,
        ), resume=True, progress=False)
        models[f"{name}_mlb"] = student
    return models
