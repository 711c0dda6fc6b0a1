"""What a relabel job is (:class:`RelabelRequest`, its :class:`RelabelConfig`) and the records
it returns to callers and flows (plan, per-call shard statistics, summary, quarantine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt, model_validator

from mlb.blend import BlendConfig
from mlb.config import FrozenConfig
from mlb.inference import InferenceConfig, nest_inference_fields
from mlb.labels.metadata import QuarantinedSample


class LabellingInference(InferenceConfig):
    """The teacher's inference settings when it labels a corpus. Batches default to 8 (offline
    labelling is throughput-bound); ``short_side``, ``batch_size`` and ``amp`` change the
    stored bytes and are part of the version id, ``device`` and ``channels_last`` are not."""

    batch_size: PositiveInt = 8


class RelabelConfig(FrozenConfig):
    """How the teacher labels a corpus; every field except ``inference.device``,
    ``inference.channels_last``, ``skip_bad`` and ``decode_threads`` changes the stored bytes
    and is part of the version id."""

    blend: BlendConfig = BlendConfig()
    inference: LabellingInference = LabellingInference()
    shard_size: PositiveInt = 64
    store_teacher_alpha: bool = False
    skip_bad: bool = False
    decode_threads: PositiveInt = 2

    _flat_inference = model_validator(mode="before")(nest_inference_fields)


class RelabelRequest(FrozenConfig):
    """One relabel job: the teacher, the corpus folders, the store, lineage and settings."""

    teacher: str
    images: str
    masks: str
    store: str
    weights: Literal["model", "ema"] = "model"
    corpus: str | None = None
    """Corpus name in the store (default: the images folder's name)."""
    parent_version: str | None = None
    """The label version the teacher was trained on (lineage only)."""
    ema_round: NonNegativeInt = 0
    config: RelabelConfig = RelabelConfig()

    @property
    def corpus_name(self) -> str:
        return self.corpus or Path(self.images).resolve().name


class _Record(BaseModel):
    """Results returned to callers and flows: frozen, JSON-able."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RelabelPlan(_Record):
    """What :func:`prepare_relabel` found: the version to write and the work left."""

    version_id: str
    store: str
    corpus: str
    samples: int
    shard_count: int
    pending_shards: list[int]
    already_published: bool
    quarantined: list[QuarantinedSample]
    """Scan-stage quarantine (shard-stage records appear in the summary)."""


class ShardStats(_Record):
    """What one :func:`relabel_shards` call did."""

    version_id: str
    shards_written: list[int]
    shards_skipped: list[int]
    """Already committed (by an earlier run or a concurrent writer): nothing written."""
    labelled: int
    quarantined: list[QuarantinedSample]
    seconds: float
    samples_per_s: float
    process: str = ""
    """``host:pid`` of the process that ran the call (a Dask worker, or the caller's)."""
    teacher_loads: int = 0
    """Teachers this process has loaded so far: stays 1 on a worker that labels many shards
    with one teacher (the cache in :func:`cached_teacher`)."""


class RelabelSummary(_Record):
    """A published version: id, counts, quarantine and (for :func:`relabel`) throughput."""

    version_id: str
    store: str
    corpus: str
    counts: dict[str, int]
    quarantined: list[QuarantinedSample]
    already_published: bool = False
    resumed_shards: int = 0
    written_shards: int = 0
    seconds: float | None = None
    samples_per_s: float | None = None


