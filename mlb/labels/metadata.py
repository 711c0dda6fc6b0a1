"""The metadata a label version carries, as one frozen, typed record.

Written by :func:`mlb.labels.relabel.prepare_relabel` into the version (``metadata`` of its
``draft.json`` / ``version.json``) and read back by every reader: student training (the
teacher's network), the EMA round (the round number), ``mlb labels list`` and the relabel
summary (the scan quarantine). Readers parse it with :meth:`LabelVersionMetadata.parse` instead
of walking key paths.

Stored bytes: ``to_stored()`` gives exactly the JSON the previous release wrote (same keys,
same values), so version ids and files do not change. Versions written by other producers (a
store filled through ``storage`` directly, an older release) may lack any part: every section
and field is optional when parsed and unknown keys are kept, so reading never fails on them.
Pydantic only (no torch): ``mlb labels list`` reads it without the network code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from storage import QuarantineRecord

__all__ = ["CorpusInfo", "InferenceInfo", "LabelVersionMetadata", "Lineage", "QuarantinedSample",
           "TeacherInfo"]


class _Section(BaseModel):
    # extra="allow": keys a later (or another) producer wrote survive a read and a rewrite.
    model_config = ConfigDict(frozen=True, extra="allow")


# The one quarantine record (storage.QuarantineRecord), by the name this package has used.
QuarantinedSample = QuarantineRecord


class Lineage(_Section):
    parent_version: str | None = None
    """The label version the teacher (or the EMA student) was trained on."""
    ema_round: int = 0
    teacher_label_version: str | None = None
    """The label version recorded in the teacher checkpoint."""


class TeacherInfo(_Section):
    path: str | None = None
    sha256: str | None = None
    weights: Literal["model", "ema"] | None = None
    kind: str | None = None
    step: int | None = None
    model: dict[str, Any] | None = None
    """The teacher's ``ModelConfig`` as JSON (``name``, ``options``)."""

    @property
    def model_name(self) -> str | None:
        return None if self.model is None else self.model.get("name")


class InferenceInfo(_Section):
    short_side: int | None = None
    batch_size: int | None = None
    amp: bool | None = None
    resize_back: str | None = None


class CorpusInfo(_Section):
    name: str | None = None
    images: str | None = None
    masks: str | None = None
    scan_quarantine: tuple[QuarantinedSample, ...] = ()


class LabelVersionMetadata(_Section):
    """Lineage, teacher, blend and inference settings, corpus and scan quarantine."""

    lineage: Lineage = Lineage()
    teacher: TeacherInfo = TeacherInfo()
    blend: dict[str, Any] | None = None
    """The :class:`mlb.blend.BlendConfig` as JSON."""
    inference: InferenceInfo = InferenceInfo()
    corpus: CorpusInfo = CorpusInfo()
    producer: str | None = None
    run: dict[str, str] | None = None
    """The orchestrator run that created the version (``{"prefect_flow_run_id": ...}``); set
    only by callers that pass it, never an input of the version id."""

    @classmethod
    def parse(cls, stored: dict[str, Any] | None) -> LabelVersionMetadata:
        """A version's stored ``metadata`` dict (any producer's) as the typed record."""
        return cls.model_validate(stored or {})

    def to_stored(self) -> dict[str, Any]:
        """The plain JSON kept in the version: only what was set or parsed, byte for byte."""
        return self.model_dump(mode="json", exclude_unset=True)
