"""The ``pipeline`` flow: the whole of offline MLB once, on the built-in synthetic benchmark.

    synth (composite, natural, validation) -> train-teacher -> relabel -> train-student
        -> evaluate teacher and student -> report

Every step is the deployed flow of the same name, run as a subflow, so ``mlb-flows demo``
(this flow at :meth:`PipelineRequest.demo` size, embedded) exercises exactly what operators
run. A rerun with the same request resumes: finished checkpoints and the published label
version are found and reused, only synthesis and scoring run again.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from flows.evaluate import evaluate
from flows.relabel import relabel
from flows.runlog import start_run
from flows.runners import DaskConfig
from flows.training import train_student, train_teacher
from mlb.config import FrozenConfig
from mlb.data.augment import AugmentConfig
from mlb.data.synth import make_composite_corpus, make_natural_corpus
from mlb.evaluate import EvaluateRequest, metrics_table
from mlb.inference import InferenceConfig, nest_inference_fields
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.models import ModelConfig
from mlb.train import StudentRequest, TeacherRequest, TrainConfig
from mlb.train.config import ModelField, PathText

# Seeds of the three synthetic sets: the natural training and validation sets never share
# a sample (mlb.data.synth draws sample i of a seed independently of the count).
COMPOSITE_SEED, NATURAL_SEED, VALIDATION_SEED = 0, 1, 2


class PipelineRequest(FrozenConfig):
    """The benchmark's size, the two networks and their training, relabel and scoring."""

    work: PathText
    """Everything goes here: ``data/``, ``labels/`` (the store), ``checkpoints/``,
    ``report.md``."""
    composite_count: PositiveInt = 200
    natural_count: PositiveInt = 500
    validation_count: PositiveInt = 50
    size: int = Field(256, ge=32)
    """Side of the synthetic square images (px)."""
    seed: NonNegativeInt = 0
    """Added to each set's own seed: another benchmark draw."""
    teacher_model: ModelField = ModelConfig(name="unet_r101")
    student_model: ModelField = ModelConfig(name="unet_r18")
    teacher_train: TrainConfig = TrainConfig(steps=10_000)
    student_train: TrainConfig = TrainConfig(steps=20_000)
    augment: AugmentConfig = AugmentConfig()
    relabel: RelabelConfig = RelabelConfig()
    dask: DaskConfig = DaskConfig()
    inference: InferenceConfig = InferenceConfig()
    """How the teacher and the student are run when they are scored."""

    _flat_inference = model_validator(mode="before")(nest_inference_fields)

    @classmethod
    def demo(cls, work: str | Path) -> PipelineRequest:
        """A few minutes on 2 CPU cores: 64 px images, a half-width ResNet-18, 30 steps."""
        train = TrainConfig(steps=30, batch_size=4, lr=1e-3, warmup_steps=3, device="cpu",
                            checkpoint_every=0)
        return cls(work=str(work), composite_count=16, natural_count=24, validation_count=8,
                   size=64, teacher_model="unet_r18_w05", student_model="unet_r18_w05",
                   teacher_train=train, student_train=train,
                   augment=AugmentConfig(short_side=64, crop_sizes=(48,), output_size=48),
                   relabel=RelabelConfig(inference={"short_side": 64, "batch_size": 4,
                                                    "device": "cpu"}, shard_size=8),
                   inference={"short_side": 64, "device": "cpu"})


class PipelineResult(FrozenConfig):
    """Where the run's outputs are, and the scores (mean metrics per model)."""

    report: str
    teacher: str
    student: str
    label_version: str
    metrics: dict[str, dict[str, float]]


@task(name="synth", cache_policy=NO_CACHE)
def synth(kind: str, out: str, count: int, size: int, seed: int) -> str:
    make = make_composite_corpus if kind == "composite" else make_natural_corpus
    return str(make(out, count=count, size=size, seed=seed, progress=False).out_dir)


@task(name="report", cache_policy=NO_CACHE)
def write_report(path: str, table: str) -> str:
    Path(path).write_text(table)
    return path


@flow(name="pipeline")
def pipeline(request: PipelineRequest) -> PipelineResult:
    """Synthesise the benchmark, train the teacher, relabel, train the student, score both."""
    request = start_run(request)
    work = Path(request.work)
    data = work / "data"
    matte = synth("composite", str(data / "composite"), request.composite_count, request.size,
                  COMPOSITE_SEED + request.seed)
    natural = Path(synth("natural", str(data / "natural"), request.natural_count, request.size,
                         NATURAL_SEED + request.seed))
    validation = Path(synth("natural", str(data / "validation"), request.validation_count,
                            request.size, VALIDATION_SEED + request.seed))
    teacher = train_teacher(TeacherRequest(
        matte=matte, model=request.teacher_model, out=str(work / "checkpoints/teacher.pt"),
        train=request.teacher_train, augment=request.augment))
    store = str(work / "labels")
    version_id = relabel(RelabelRequest(
        teacher=teacher.checkpoint, images=str(natural / "images"),
        masks=str(natural / "masks"), store=store, config=request.relabel), dask=request.dask)
    # The student starts from the teacher when they share an architecture (method.md s.1:
    # the EMA mean teacher starts at the student's initial weights).
    same = request.student_model == request.teacher_model
    student = train_student(StudentRequest(
        store=store, labels=version_id, model=request.student_model,
        out=str(work / "checkpoints/student.pt"), init=teacher.checkpoint if same else None,
        train=request.student_train, augment=request.augment))
    metrics = {name: evaluate(EvaluateRequest(
        model=checkpoint, images=str(validation / "images"), alphas=str(validation / "alphas"),
        inference=request.inference)).mean
        for name, checkpoint in (("teacher", teacher.checkpoint),
                                 ("student", student.checkpoint))}
    table = (f"# Pipeline report\n\nLabel version `{version_id}`; validation: "
             f"{request.validation_count} synthetic natural images.\n\n"
             + metrics_table(metrics, short_side=request.inference.short_side))
    report = write_report(str(work / "report.md"), table)
    create_markdown_artifact(key="pipeline-report", markdown=table,
                             description=f"teacher vs student in {work}")
    return PipelineResult(report=report, teacher=teacher.checkpoint, student=student.checkpoint,
                          label_version=version_id, metrics=metrics)
