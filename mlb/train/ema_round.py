"""One mean-teacher round of offline MLB (method.md section 1), owned by the library.

    plan  ->  relabel (the student's EMA copy as teacher, a new label version)
          ->  train the next student (from the current student, on the new version)
          ->  evaluate current and new students  ->  promote the new one if not worse

The new version records its lineage (parent version = the one the current student learned
from, and the round number). The new student replaces the ``current`` checkpoint only when
its whole-region MSE on the validation set is not worse; the replaced file is kept next to
the round's outputs, so a promotion can be undone by copying it back. The round's metrics
table is written to ``report.md`` in the round's folder, its outcome to ``round.json``.

Left on a schedule, a round must make sense every night (issue 14):

- bootstrap: with no current student yet, the first round takes the newest finished
  student with an EMA copy trained on the corpus's newest label version (found through the
  training records beside that version, ``mlb.train.lineage``) and copies it to
  ``request.student``; without one it fails before any work with one message saying what to
  train first;
- the promoted pointer: ``corpora/<corpus>/promoted.json`` in the store names the labels the
  current student learned from. It is set by a bootstrap and moved by a promotion only;
  ``latest`` keeps meaning "last published", so a rejected round's labels become ``latest``
  but never ``promoted``;
- nothing new: a round is a function of the current student's bytes, the corpus and the
  round's settings. When ``round.json`` of the version this round would make says that the
  same student, corpus and settings were already through a round, the round ends at once
  with the outcome ``nothing-new`` and a message saying why (instead of relabelling,
  training and scoring the same things again every night).

The round lives under ``mlb/train`` because a mean teacher is a training scheme: it composes
the label version (``mlb.labels``), a student run and an evaluation, all below it. How each
step executes is the caller's: :func:`run_round` takes the steps as :class:`RoundSteps`, in
this process by default; the ``ema-relabel`` flow passes its Prefect tasks (relabel over
Dask, training and scoring as retried tasks), so the order, lineage, promotion rule and
report exist once, here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from mlb.checkpoint import CheckpointError, checkpoint_sha256, read_checkpoint
from mlb.config import FrozenConfig
from mlb.data.augment import AugmentConfig
from mlb.evaluate import EvaluateRequest, EvaluationReport, evaluate_checkpoint, metrics_table
from mlb.fileio import write_text_atomically
from mlb.inference import InferenceConfig, nest_inference_fields
from mlb.labels.metadata import LabelVersionMetadata
from mlb.labels.relabel import planned_version_id, relabel
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.labels.store import LabelStore, VersionNotFound, store_location
from mlb.losses import LossConfig
from mlb.models import ModelConfig
from mlb.train.config import PathText, StudentRequest, TrainConfig, TrainSummary
from mlb.train.student import train_student

PROMOTION_METRIC = "mse"  # whole-region MSE (method.md section 3)
ROUND_RECORD = "round.json"

logger = logging.getLogger(__name__)

Outcome = Literal["promoted", "rejected", "nothing-new"]


class RoundError(ValueError):
    """A round that cannot start: what is missing, and what to run first."""


class EmaRoundRequest(FrozenConfig):
    """One mean-teacher round: the current student, the corpus, validation set and settings."""

    student: PathText
    """The current student checkpoint; its EMA copy is this round's teacher, and a better
    new student replaces this file. Missing, the round bootstraps it (module docstring)."""
    images: PathText
    masks: PathText
    store: PathText
    validation_images: PathText
    validation_alphas: PathText
    work: PathText
    """Round outputs go to ``<work>/<new version id>/``: ``student.pt``, ``report.md``,
    ``round.json`` and, after a promotion, ``previous-student.pt``."""
    train: TrainConfig
    corpus: str | None = None
    """Corpus name in the store (default: the images folder's name, as for relabel)."""
    relabel: RelabelConfig = RelabelConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    strong_augment: bool = True
    inference: InferenceConfig = InferenceConfig()
    """How both students are run when they are scored (the relabel has its own, in
    ``relabel.inference``)."""

    _flat_inference = model_validator(mode="before")(nest_inference_fields)

    @property
    def corpus_name(self) -> str:
        return self.corpus or Path(self.images).resolve().name


class EmaRound(FrozenConfig):
    """The outcome of a round."""

    ema_round: int
    version_id: str
    parent_version: str | None
    student: str
    """The round's new student checkpoint."""
    current_metric: float
    new_metric: float
    promoted: bool
    """True only when THIS call promoted (never for ``nothing-new``)."""
    report: str
    """``report.md``: the metrics table and the decision."""
    outcome: Outcome
    message: str
    """One line for logs and the flow run's state."""
    store: str
    """The label store as an absolute path (or its fsspec URL)."""
    corpus: str
    bootstrapped_from: str | None = None
    """The checkpoint copied to ``request.student`` when the round had to bootstrap."""


class RoundPlan(FrozenConfig):
    """What the current student says about the round: its lineage, its architecture, the
    version the round makes, and whether that work was already done."""

    ema_round: int
    parent_version: str | None
    model: ModelConfig
    version_id: str
    """The label version this round's relabel makes (or made)."""
    student_sha256: str
    corpus: str
    bootstrapped_from: str | None = None
    previous: EmaRound | None = None
    """This very round (same student bytes, corpus and settings) as it ended before."""


def relabel_request(request: EmaRoundRequest, *, parent_version: str | None,
                    ema_round: int) -> RelabelRequest:
    """The round's relabel: the current student's EMA copy labels the corpus."""
    return RelabelRequest(
        teacher=request.student, weights="ema", images=request.images, masks=request.masks,
        store=request.store, corpus=request.corpus, parent_version=parent_version,
        ema_round=ema_round, config=request.relabel)


def plan_round(request: EmaRoundRequest) -> RoundPlan:
    """Bootstrap the current student if there is none; read it; fail before any work when it
    has no EMA copy; find out whether the round has anything new to do."""
    bootstrapped = None if os.path.exists(request.student) else bootstrap(request)
    checkpoint = read_checkpoint(request.student)
    if checkpoint.ema_state_dict is None:  # checked here, before a whole relabel is spent
        raise CheckpointError(f"{request.student} has no EMA weights to relabel with; train "
                              "the student with an EMA copy (StudentRequest.ema=True)")
    ema_round = _parent_round(request.store, checkpoint.label_version) + 1
    version_id = planned_version_id(relabel_request(
        request, parent_version=checkpoint.label_version, ema_round=ema_round))
    sha = checkpoint_sha256(request.student)
    return RoundPlan(ema_round=ema_round, parent_version=checkpoint.label_version,
                     model=checkpoint.model_config, version_id=version_id, student_sha256=sha,
                     corpus=request.corpus_name, bootstrapped_from=bootstrapped,
                     previous=_previous_round(request, version_id, sha))


def bootstrap(request: EmaRoundRequest) -> str:
    """Copy the newest finished student with an EMA copy trained on the corpus's newest
    label version (its promoted one, if it has one) to ``request.student``, and point the
    corpus's promoted pointer at that version; returns the copied checkpoint. RoundError
    saying what to train first when there is none."""
    corpus, uri = request.corpus_name, store_location(request.store)
    store = LabelStore(request.store)
    # A corpus that had a current student (the file was lost): the labels it learned from,
    # not a rejected round's newer ones. The first time: the corpus's newest version.
    promoted = store.promoted(corpus)
    latest = promoted or store.latest(corpus=corpus)
    which = "promoted" if promoted else "newest"
    if latest is None:
        raise RoundError(
            f"no current student at {request.student}, and corpus {corpus!r} has no published "
            f"label version in {uri}: relabel it with a teacher first (mlb relabel --teacher "
            f"TEACHER --images {request.images} --masks {request.masks} --store {uri}), then "
            f"train a student with an EMA copy on it (mlb train student --store {uri} --labels "
            f"latest --init TEACHER --ema --out {request.student} ...)")
    found, passed = _bootstrap_candidates(store, latest)
    if not found:
        teacher = LabelVersionMetadata.parse(store.open_version(latest).metadata).teacher.path
        why = f" ({'; '.join(passed)})" if passed else ""
        raise RoundError(
            f"no current student at {request.student}, and no finished student with an EMA "
            f"copy was trained on {latest}, the {which} label version of corpus {corpus!r} in "
            f"{uri}{why}: train one first (mlb train student --store {uri} --labels {latest} "
            f"--init {teacher or 'TEACHER'} --ema --steps N --out {request.student})")
    source = max(found)[1]
    Path(request.student).parent.mkdir(parents=True, exist_ok=True)
    partial = f"{request.student}.partial"
    shutil.copy2(source, partial)
    os.replace(partial, request.student)
    store.move_promoted(latest, corpus)  # the labels the (bootstrapped) current student learned
    logger.info("bootstrapped the current student %s from %s, trained on %s",
                request.student, source, latest)
    return source


def _bootstrap_candidates(store: LabelStore, version_id: str
                          ) -> tuple[list[tuple[float, str]], list[str]]:
    """(mtime, path) of the usable students recorded beside ``version_id``, and why the
    others were passed over."""
    records, _ = store.training_records(version_id)
    found, passed = [], []
    for record in records:
        path = record.get("checkpoint")
        if record.get("kind") != "student" or not isinstance(path, str):
            continue
        if not os.path.isfile(path):
            passed.append(f"{path} no longer exists")
            continue
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError as error:
            passed.append(str(error))
            continue
        planned = checkpoint.train_config.get("request", {}).get("train", {}).get("steps")
        if checkpoint.label_version != version_id:
            passed.append(f"{path} now holds a student of {checkpoint.label_version}")
        elif checkpoint.ema_state_dict is None:
            passed.append(f"{path} has no EMA copy")
        elif not isinstance(planned, int) or checkpoint.step < planned:
            passed.append(f"{path} is unfinished (step {checkpoint.step} of {planned})")
        else:
            found.append((os.path.getmtime(path), path))
    return found, passed


def promote(new: str, current: str, backup: str) -> None:
    """Keep ``current`` as ``backup``, then replace it with ``new`` atomically."""
    shutil.copy2(current, backup)
    partial = f"{current}.partial"
    shutil.copy2(new, partial)
    os.replace(partial, current)  # readers see the old file or the new one, never a torn one


def _relabel_here(request: RelabelRequest) -> str:
    return relabel(request, progress=False).version_id


def _train_here(request: StudentRequest) -> TrainSummary:
    return train_student(request, resume=True, progress=False)


def _evaluate_here(request: EvaluateRequest) -> EvaluationReport:
    return evaluate_checkpoint(request, progress=False)


@dataclass(frozen=True)
class RoundSteps:
    """How each step of a round runs; the defaults run it in this process."""

    plan: Callable[[EmaRoundRequest], RoundPlan] = plan_round
    relabel: Callable[[RelabelRequest], str] = _relabel_here
    """Labels the corpus into a version; returns its id."""
    train: Callable[[StudentRequest], TrainSummary] = _train_here
    evaluate: Callable[[EvaluateRequest], EvaluationReport] = _evaluate_here
    promote: Callable[[str, str, str], None] = promote


def run_round(request: EmaRoundRequest, steps: RoundSteps = RoundSteps()) -> EmaRound:
    """One mean-teacher round; the new student is promoted only if it is not worse, and a
    round already done with the same student, corpus and settings does nothing."""
    plan = steps.plan(request)
    if plan.previous is not None:
        result = nothing_new(plan)
        logger.info("%s", result.message)
        return result
    version_id = steps.relabel(relabel_request(request, parent_version=plan.parent_version,
                                               ema_round=plan.ema_round))
    folder = Path(request.work) / version_id
    trained = steps.train(StudentRequest(
        store=request.store, labels=version_id, model=plan.model, out=str(folder / "student.pt"),
        init=request.student, train=request.train, loss=request.loss, augment=request.augment,
        strong_augment=request.strong_augment, ema=True))
    current, new = (steps.evaluate(EvaluateRequest(
        model=model, images=request.validation_images, alphas=request.validation_alphas,
        inference=request.inference)) for model in (request.student, trained.checkpoint))
    current_metric, new_metric = _promotion_metric(current), _promotion_metric(new)
    better = is_not_worse(new_metric, current_metric)
    if better:
        steps.promote(trained.checkpoint, request.student, str(folder / "previous-student.pt"))
        LabelStore(request.store).move_promoted(version_id, plan.corpus)
    report = folder / "report.md"
    report.write_text(round_markdown(plan, version_id, current.mean, new.mean, promoted=better,
                                     short_side=request.inference.short_side))
    result = EmaRound(
        ema_round=plan.ema_round, version_id=version_id, parent_version=plan.parent_version,
        student=trained.checkpoint, current_metric=current_metric, new_metric=new_metric,
        promoted=better, report=str(report), outcome="promoted" if better else "rejected",
        message=_decision_line(plan, version_id, current_metric, new_metric, promoted=better),
        store=store_location(request.store), corpus=plan.corpus,
        bootstrapped_from=plan.bootstrapped_from)
    _write_round_record(folder, result, student_sha256=plan.student_sha256, request=request)
    logger.info("%s", result.message)
    return result


def nothing_new(plan: RoundPlan) -> EmaRound:
    """The outcome of a round whose work was already done (``plan.previous``)."""
    previous = plan.previous
    assert previous is not None
    decision = ("its student was promoted" if previous.outcome == "promoted" else
                f"its student was rejected (whole-region {PROMOTION_METRIC.upper()} "
                f"{previous.new_metric:.4g} against {previous.current_metric:.4g})")
    message = (f"nothing new to do: round {previous.ema_round} already ran with this current "
               f"student (sha256 {plan.student_sha256[:12]}), this corpus and these settings; "
               f"it made label version {previous.version_id} and {decision}. A round has work "
               "again once the current student changes (a promotion or a new student at "
               "request.student), the corpus changes, or the round's settings do")
    return previous.model_copy(update={"outcome": "nothing-new", "promoted": False,
                                       "message": message,
                                       "bootstrapped_from": plan.bootstrapped_from})


def _decision_line(plan: RoundPlan, version_id: str, current: float, new: float, *,
                   promoted: bool) -> str:
    metric = PROMOTION_METRIC.upper()
    if promoted:
        return (f"round {plan.ema_round}: promoted the new student (whole-region {metric} "
                f"{new:.4g}, current {current:.4g}); corpus {plan.corpus!r} promoted -> "
                f"{version_id}")
    return (f"round {plan.ema_round}: kept the current student (new whole-region {metric} "
            f"{new:.4g}, current {current:.4g}); {version_id} is published as latest but the "
            f"promoted pointer still names {plan.parent_version}")


def _request_digest(request: EmaRoundRequest) -> str:
    text = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _write_round_record(folder: Path, result: EmaRound, *, student_sha256: str,
                        request: EmaRoundRequest) -> None:
    """``round.json``: the outcome and what it was computed from (the nothing-new check)."""
    record = {"round": result.model_dump(mode="json"), "student_sha256": student_sha256,
              "request_sha256": _request_digest(request),
              "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    write_text_atomically(folder / ROUND_RECORD,
                          json.dumps(record, indent=1, sort_keys=True) + "\n")


def _previous_round(request: EmaRoundRequest, version_id: str, student_sha256: str
                    ) -> EmaRound | None:
    """The recorded outcome of this very round, if it ran before; a record that cannot be
    read (or another student's, or other settings') means the round runs."""
    path = Path(request.work) / version_id / ROUND_RECORD
    try:
        record = json.loads(path.read_text())
        if (record["student_sha256"] != student_sha256
                or record["request_sha256"] != _request_digest(request)):
            return None
        return EmaRound.model_validate(record["round"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("%s cannot be read (%s); the round runs again", path, error)
        return None


def _promotion_metric(report: EvaluationReport) -> float:
    """The report's mean of the promotion metric; NaN when nothing was scored (a report
    read back from JSON holds None there)."""
    value = report.mean.get(PROMOTION_METRIC)
    return math.nan if value is None else value


def _parent_round(store: str, parent_version: str | None) -> int:
    """The EMA round of the version the student learned from (0: none, or another store)."""
    if parent_version is None:
        return 0
    try:
        metadata = LabelStore(store).open_version(parent_version).metadata
    except VersionNotFound:
        return 0
    return LabelVersionMetadata.parse(metadata).lineage.ema_round


def is_not_worse(new: float, current: float) -> bool:
    """Promotion rule on a lower-is-better metric; NaN (nothing scored) never promotes."""
    return not (math.isnan(new) or math.isnan(current)) and new <= current


def round_markdown(plan: RoundPlan, version_id: str, current: dict[str, float],
                   new: dict[str, float], *, promoted: bool, short_side: int) -> str:
    """The round's metrics table and decision."""
    decision = ("promoted: the new student replaces the current one" if promoted else
                "kept the current student: the new one is worse")
    bootstrap_line = (f"- bootstrapped: the current student was copied from "
                      f"`{plan.bootstrapped_from}`\n" if plan.bootstrapped_from else "")
    return (f"# Mean-teacher round {plan.ema_round}\n\n"
            f"- label version `{version_id}` (parent `{plan.parent_version}`)\n"
            + bootstrap_line +
            f"- decision on whole-region {PROMOTION_METRIC.upper()}: {decision}\n\n"
            + metrics_table({"current student": current,
                             f"round {plan.ema_round} student": new}, short_side=short_side))
