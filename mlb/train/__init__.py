"""Training: the teacher, student and DDC recipes over one loop (``fit``).

    from mlb.train import TrainConfig, StudentRequest, train_student
    summary = train_student(StudentRequest(store="labels/", model="unet_r18_w05",
                                           out="runs/student.pt", train=TrainConfig(steps=2000)))

Each ``train_*`` takes a frozen, JSON-able request (the Prefect flows pass the same objects)
and returns a :class:`TrainSummary`; keyword options ``resume``, ``overwrite``,
``stop_at_step`` and ``progress`` control the run, not its result.
"""

from mlb.train.config import (
    DEFAULT_EMA_MOMENTUM,
    DEFAULT_LR,
    DdcRequest,
    StudentRequest,
    TeacherRequest,
    TrainConfig,
    TrainSummary,
)
from mlb.train.ddc import train_ddc
from mlb.train.loop import RunRecord, fit
from mlb.train.student import train_student
from mlb.train.teacher import pretrain_path, train_teacher

# The recipes by name, as ``mlb train RECIPE``, torchrun's worker and the flows call them.
RECIPES = {"teacher": train_teacher, "student": train_student, "ddc": train_ddc}

__all__ = [
    "DEFAULT_EMA_MOMENTUM",
    "DEFAULT_LR",
    "RECIPES",
    "DdcRequest",
    "RunRecord",
    "StudentRequest",
    "TeacherRequest",
    "TrainConfig",
    "TrainSummary",
    "fit",
    "pretrain_path",
    "train_ddc",
    "train_student",
    "train_teacher",
]
