"""The offline MLB step: a frozen teacher labels a segmentation corpus into a label version.

method.md section 1, "Offline form": the teacher runs once over the corpus; its matte is
blended with each coarse mask (:mod:`mlb.blend`) at the image's ORIGINAL resolution, quantised
to uint8 and kept as an immutable, content-addressed label version (:mod:`storage.labelstore`)
that student training reads many times.

Three steps, callable one by one (the Prefect flows spread ``relabel_shards`` over workers) or
all at once (:func:`relabel`, what ``mlb relabel`` runs)::

    plan = prepare_relabel(request)        # scan, manifest (hashes), version id, draft
    relabel_shards(request, version_id=plan.version_id, shards=plan.pending_shards)
    summary = publish_relabel(request, version_id=plan.version_id)

Every argument is a path, an id or a config, so each call can run in another process.

Identity and resumption. The version id is a hash of the corpus manifest (sample ids and file
hashes), the teacher file's sha256, the blend settings, the store schema, and everything else
that changes the stored bytes: ``short_side``, ``weights``, ``store_teacher_alpha``,
``batch_size``, ``shard_size`` and ``amp`` (batch size and shard size matter because a
prediction depends on the padded canvas of its batch, see :mod:`mlb.inference`). Batches are
formed inside one shard only, in a fixed order (sorted by resized size, then manifest order),
so a shard always yields the same bytes on the same hardware and software. A run killed at
any moment (SIGKILL included) leaves committed shards and at most some uncommitted leftovers;
rerunning with the same inputs finds the same draft, skips the committed shards, rewrites the
others and ends byte-identical to an uninterrupted run (wall-clock times live only in the
version's ``events.json``). A version made on a GPU (bfloat16/float16 autocast) is not
byte-identical to one made on the CPU: finish a version on the kind of device that started it.

Concurrency. On a local store, storage's OS file locks make concurrent writers safe: two
``mlb relabel`` runs on the same inputs (or many ``relabel_shards`` workers) open the same
draft; each shard is written by exactly one of them (``write_shard`` holds the shard's lock
and re-checks its commit marker, so the second writer of a shard skips it), each run skips
shards it sees committed before starting them, and both publish calls return the same
version. Neither run fails and the store is never corrupted; the cost is that two runs started
together may both compute the same shards (storage has no "claim a shard" call yet). A writer
that waits longer than the store's lock timeout fails with ``VersionLocked`` naming the
holder. On object stores (``s3://``, ``memory://``) there are no locks: run one writer per
shard (the flows do).

Stores. ``store`` is a local folder or any fsspec URL: ``memory://labels`` (tests),
``s3://bucket/labels`` (needs ``s3fs`` installed; credentials and region come from the
environment as boto does: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
instance roles; a custom endpoint via ``FSSPEC_S3_ENDPOINT_URL``).

Bad samples. Pairing problems (an image without a mask, two files with one stem) are found by
the corpus scan: with ``skip_bad`` they are recorded in the version's metadata
(``corpus.scan_quarantine``) and left out of the manifest, else the scan raises naming the
file. Unreadable files (a bad header, truncated pixel data, a mask of another aspect ratio) are
found per shard: with ``skip_bad`` they are quarantined in the shard with the reason; else
``BadSample`` naming the file is raised before anything of that shard is written. A corpus file
whose bytes no longer match the manifest always raises (its labels would not belong to the
version's id).
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt, field_validator
from torch import Tensor, nn
from tqdm import tqdm

from mlb.blend import BlendConfig, blend_labels_with, quantize_unit
from mlb.checkpoint import Checkpoint, CheckpointError, load_model, read_checkpoint
from mlb.config import FrozenConfig
from mlb.data.corpus import find_segmentation_samples
from mlb.data.imageio import BadSample, image_size, read_image, read_mask, to_uint8
from mlb.inference import (
    InferenceBatch,
    check_device_name,
    pad_batch,
    prepare_model,
    resize_short_side,
    resized_size,
    resolve_device,
    run_model,
    to_original_size,
)
from mlb.labelid import id_settings
from mlb.relabelchecks import check_corpus_identity, check_parent_version
from storage import (
    DraftVersion,
    LabelStore,
    LabelVersion,
    Manifest,
    ManifestEntry,
    QuarantineRecord,
    SampleLabels,
    VersionNotFound,
    build_manifest,
    content_id,
    file_sha256,
)

__all__ = [
    "QuarantinedSample",
    "RelabelConfig",
    "RelabelPlan",
    "RelabelRequest",
    "RelabelSummary",
    "ShardStats",
    "prepare_relabel",
    "publish_relabel",
    "relabel",
    "relabel_shards",
]


class RelabelConfig(FrozenConfig):
    """How the teacher labels a corpus; every field except ``device``, ``skip_bad`` and
    ``decode_threads`` changes the stored bytes and is part of the version id."""

    blend: BlendConfig = BlendConfig()
    batch_size: PositiveInt = 8
    short_side: PositiveInt = 512
    shard_size: PositiveInt = 64
    store_teacher_alpha: bool = False
    skip_bad: bool = False
    device: str = "auto"
    amp: bool = True
    decode_threads: PositiveInt = 2

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return check_device_name(device)


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


class QuarantinedSample(_Record):
    """A sample left without labels: found by the corpus ``scan`` or while labelling a
    ``shard``."""

    sample_id: str
    reason: str
    stage: Literal["scan", "shard"]
    path: str | None = None


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


# --------------------------------------------------------------------------- identity


def version_inputs(request: RelabelRequest) -> dict:
    """The ``extra`` of the version's content id: settings that change the stored bytes."""
    config = request.config
    return id_settings(short_side=config.short_side, weights=request.weights,
                       store_teacher_alpha=config.store_teacher_alpha,
                       batch_size=config.batch_size, shard_size=config.shard_size,
                       amp=config.amp)


def _version_id(request: RelabelRequest, manifest: Manifest, teacher_sha256: str) -> str:
    return content_id(manifest=manifest, teacher_sha256=teacher_sha256,
                      blend=request.config.blend.model_dump(mode="json"),
                      extra=version_inputs(request))


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def teacher_sha256(path: str | os.PathLike) -> str:
    """sha256 of the teacher file, cached per (path, size, mtime) in this process."""
    resolved = os.path.abspath(path)
    if not os.path.isfile(resolved):
        raise FileNotFoundError(f"teacher checkpoint not found: {resolved}")
    stat = os.stat(resolved)
    key = (resolved, stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(resolved)
    return _SHA_CACHE[key]


# --------------------------------------------------------------------------- prepare


def prepare_relabel(request: RelabelRequest) -> RelabelPlan:
    """Scan the corpus, hash it into a manifest, compute the version id, open the draft.

    Resumes an existing draft of the same id (its recorded metadata wins) and reports a
    published one as ``already_published`` with no pending shards.
    """
    config = request.config
    # The teacher first: a wrong path fails before the corpus is hashed.
    sha = teacher_sha256(request.teacher)
    checkpoint = read_checkpoint(request.teacher)
    if request.weights == "ema" and checkpoint.ema_state_dict is None:
        raise CheckpointError(f"{request.teacher} holds no EMA weights (weights='ema' was "
                              "asked for)")
    scan = find_segmentation_samples(request.images, request.masks, skip_bad=config.skip_bad,
                                     check_headers=False)  # headers are read per shard
    if not scan.samples:
        raise ValueError(f"no usable image/mask pairs in {request.images} and {request.masks} "
                         f"({scan.summary()})")
    manifest = build_manifest(
        ((s.sample_id, s.image_path, s.mask_path) for s in scan.samples),
        corpus=request.corpus_name)
    version_id = _version_id(request, manifest, sha)
    scan_quarantine = [QuarantinedSample(sample_id=q.sample_id, reason=q.reason, stage="scan",
                                         path=str(q.path)) for q in scan.quarantine]
    store = LabelStore(request.store)
    check_parent_version(store, request.parent_version)
    check_corpus_identity(store, manifest, images=request.images,
                          named=request.corpus is not None)
    draft = _open_or_resume(store, version_id, request, manifest,
                            _metadata(request, checkpoint, sha, scan_quarantine))
    published = draft.published
    return RelabelPlan(
        version_id=version_id, store=request.store, corpus=manifest.corpus,
        samples=len(manifest), shard_count=draft.shard_count,
        pending_shards=[] if published else draft.pending_shards(),
        already_published=published, quarantined=scan_quarantine)


def _metadata(request: RelabelRequest, checkpoint: Checkpoint, sha: str,
              scan_quarantine: Sequence[QuarantinedSample]) -> dict:
    """Lineage, teacher, blend and inference settings kept in the version (plain JSON)."""
    config = request.config
    return {
        "lineage": {"parent_version": request.parent_version, "ema_round": request.ema_round,
                    "teacher_label_version": checkpoint.label_version},
        "teacher": {"path": os.path.abspath(request.teacher), "sha256": sha,
                    "weights": request.weights, "kind": checkpoint.kind,
                    "step": checkpoint.step,
                    "model": checkpoint.model_config.model_dump(mode="json")},
        "blend": config.blend.model_dump(mode="json"),
        "inference": {"short_side": config.short_side, "batch_size": config.batch_size,
                      "amp": config.amp, "resize_back": "bilinear"},
        "corpus": {"name": request.corpus_name, "images": os.path.abspath(request.images),
                   "masks": os.path.abspath(request.masks),
                   "scan_quarantine": [q.model_dump(mode="json") for q in scan_quarantine]},
        "producer": "mlb.relabel",
    }


def _open_or_resume(store: LabelStore, version_id: str, request: RelabelRequest,
                    manifest: Manifest, metadata: dict) -> DraftVersion:
    # An existing draft with this id was made from the same bytes-determining inputs (the id
    # covers them); its metadata may name other paths (a moved teacher or corpus), so it is
    # resumed as recorded instead of being compared field by field.
    try:
        return store.draft(version_id)
    except VersionNotFound:
        return store.open_draft(version_id, manifest=manifest, metadata=metadata,
                                shard_size=request.config.shard_size,
                                store_teacher_alpha=request.config.store_teacher_alpha)


# --------------------------------------------------------------------------- teacher


_TEACHERS: dict[tuple[str, str, str, str], nn.Module] = {}
_TEACHERS_LOCK = threading.Lock()
_TEACHER_LOADS = [0]  # loads in this process (a list: mutable without `global`)


def cached_teacher(path: str, *, sha256: str, weights: str, device: torch.device) -> nn.Module:
    """The teacher in eval mode on ``device``, loaded once per process and key.

    Keyed by (path, sha256, weights, device); only the last key is kept, so a worker that
    switches teachers (the next EMA round) frees the previous one.
    """
    key = (os.path.abspath(path), sha256, weights, str(device))
    with _TEACHERS_LOCK:
        if key not in _TEACHERS:
            _TEACHERS.clear()
            model, _ = load_model(path, weights=weights, device="cpu")
            _TEACHERS[key] = prepare_model(model, device=device)
            _TEACHER_LOADS[0] += 1
        return _TEACHERS[key]


def _this_process() -> dict:
    return {"process": f"{socket.gethostname()}:{os.getpid()}",
            "teacher_loads": _TEACHER_LOADS[0]}


# --------------------------------------------------------------------------- one shard


@dataclass(frozen=True)
class _Source:
    """Where one manifest sample is read from now, and the hashes it must still have."""

    sample_id: str
    image_path: Path
    mask_path: Path
    image_sha256: str
    mask_sha256: str


def _sources(entries: Sequence[ManifestEntry], request: RelabelRequest) -> list[_Source]:
    # Files are read from the request's folders by the manifest's file names: a moved corpus
    # keeps its version id (the manifest digest has no paths) and is checked by hash anyway.
    images, masks = Path(request.images), Path(request.masks)
    return [_Source(e.sample_id, images / Path(e.image_path).name,
                    masks / Path(e.mask_path).name, e.image_sha256, e.mask_sha256)
            for e in entries]


def _quarantine(error: BadSample, sample_id: str, *, skip_bad: bool) -> QuarantineRecord:
    if not skip_bad:
        raise error
    return QuarantineRecord(sample_id, f"{error.path.name}: {error.reason}")


def plan_shard_batches(sources: Sequence[_Source], *, short_side: int, batch_size: int,
                       skip_bad: bool) -> tuple[list[list[_Source]], list[QuarantineRecord]]:
    """A shard's batches: samples sorted by resized size (then manifest order), chunked.

    Sorting puts images of one size together, so most batches need no padding (faster, and
    no replicated border for the ASPP pooling to average). Headers only: no pixels decoded.
    """
    sized, quarantined = [], []
    for position, source in enumerate(sources):
        try:
            height, width = image_size(source.image_path)
        except BadSample as error:
            quarantined.append(_quarantine(error, source.sample_id, skip_bad=skip_bad))
            continue
        sized.append((resized_size(height, width, short_side=short_side), position, source))
    ordered = [source for *_, source in sorted(sized, key=lambda item: item[:2])]
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    return batches, quarantined


def _check_hash(path: Path, expected: str, sample_id: str) -> None:
    with open(path, "rb") as handle:
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
    if actual != expected:
        raise ValueError(f"{path} (sample {sample_id!r}) changed since the version's manifest "
                         f"was built: sha256 {actual}, expected {expected}; relabel it as a "
                         "new version (run prepare again)")


def _compact_mask(mask: np.ndarray) -> np.ndarray:
    """uint8 when that is exact (8-bit and binary masks), else the float32 mask as is:
    masks wait at full resolution until blended, and uint8 is four times smaller."""
    compact = to_uint8(mask)
    exact = np.array_equal(compact.astype(np.float32) / np.float32(255.0), mask)
    return compact if exact else mask


@dataclass
class _DecodedBatch:
    """One batch ready for the teacher: resized pixels plus what blending needs."""

    shard: int
    sample_ids: list[str]
    inputs: InferenceBatch | None  # None when every sample of the batch was quarantined
    coarse_masks: list[np.ndarray]
    quarantined: list[QuarantineRecord]


def decode_batch(shard: int, sources: Sequence[_Source], *, short_side: int, skip_bad: bool,
                 pin_memory: bool = False) -> _DecodedBatch:
    """Read, hash-check and decode a batch; resize and pad it for the teacher (CPU thread)."""
    sample_ids, images, masks, quarantined = [], [], [], []
    for source in sources:
        _check_hash(source.image_path, source.image_sha256, source.sample_id)
        _check_hash(source.mask_path, source.mask_sha256, source.sample_id)
        try:
            image = read_image(source.image_path)
            mask = read_mask(source.mask_path, size=image.shape[:2])
        except BadSample as error:
            quarantined.append(_quarantine(error, source.sample_id, skip_bad=skip_bad))
            continue
        sample_ids.append(source.sample_id)
        # Resized here, in the decode thread, so the full-size image is dropped at once.
        images.append(resize_short_side(image, short_side=short_side))
        masks.append(_compact_mask(mask))
    inputs = None
    if images:
        inputs = pad_batch(images, original_sizes=[mask.shape for mask in masks])
        if pin_memory:  # lets the host-to-device copy overlap the teacher's previous batch
            inputs = InferenceBatch(inputs.pixels.pin_memory(), inputs.sizes,
                                    inputs.original_sizes)
    return _DecodedBatch(shard, sample_ids, inputs, masks, quarantined)


def finish_batch(decoded: _DecodedBatch, alpha: Tensor, boundary: Tensor,
                 config: RelabelConfig) -> list[SampleLabels]:
    """Teacher outputs -> original size -> blend with each coarse mask -> uint8 labels."""
    labels = []
    pairs = to_original_size(decoded.inputs, alpha, boundary)
    for sample_id, (teacher_alpha, teacher_boundary), mask in zip(
            decoded.sample_ids, pairs, decoded.coarse_masks, strict=True):
        coarse_mask = torch.from_numpy(mask)[None, None].to(teacher_alpha.device)
        blended_alpha, blended_boundary = blend_labels_with(
            config.blend, teacher_alpha, teacher_boundary, coarse_mask)
        arrays = {"blended_alpha": blended_alpha, "blended_boundary": blended_boundary}
        if config.store_teacher_alpha:
            arrays["teacher_alpha"] = teacher_alpha
        labels.append(SampleLabels(sample_id, **{
            kind: quantize_unit(values)[0, 0].cpu().numpy() for kind, values in arrays.items()}))
    return labels


# --------------------------------------------------------------------------- pipeline


@dataclass
class _ShardEnd:
    """Marks that every batch of ``shard`` has been queued; carries its planning quarantine."""

    shard: int
    quarantined: list[QuarantineRecord]


_STOP = object()


@dataclass
class _Progress:
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    labelled: int = 0
    quarantined: list[QuarantinedSample] = field(default_factory=list)


class _ShardWriter:
    """The single writer thread: finishes batches (resize back, blend, quantise) in order and
    writes each shard once all its batches arrived. A bounded queue keeps memory flat."""

    def __init__(self, draft: DraftVersion, config: RelabelConfig, bar: tqdm,
                 done: _Progress) -> None:
        self._draft, self._config, self._bar, self._done = draft, config, bar, done
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._labels: list[SampleLabels] = []
        self._quarantined: list[QuarantineRecord] = []
        self._thread = threading.Thread(target=self._run, name="relabel-writer", daemon=True)
        self._thread.start()

    def put(self, item: object) -> None:
        while True:
            self.raise_if_failed()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Write what is complete, drop a partial shard, stop; re-raise a writer error."""
        if self._thread.is_alive():
            self.put(_STOP)
            self._thread.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not _STOP:
                self._handle(item)
        except BaseException as error:  # noqa: BLE001 (handed to the main thread, re-raised)
            self._error = error

    def _handle(self, item: object) -> None:
        if isinstance(item, _ShardEnd):
            self._write(item)
            return
        decoded, outputs = item
        self._quarantined.extend(decoded.quarantined)
        if decoded.inputs is not None:
            self._labels.extend(finish_batch(decoded, *outputs, self._config))
        self._bar.update(len(decoded.sample_ids) + len(decoded.quarantined))

    def _write(self, end: _ShardEnd) -> None:
        quarantined = end.quarantined + self._quarantined
        wrote = self._draft.write_shard(end.shard, self._labels, quarantined)
        (self._done.written if wrote else self._done.skipped).append(end.shard)
        if wrote:
            self._done.labelled += len(self._labels)
            self._done.quarantined.extend(
                QuarantinedSample(sample_id=q.sample_id, reason=q.reason, stage="shard")
                for q in quarantined)
        self._labels, self._quarantined = [], []


def _work(draft: DraftVersion, request: RelabelRequest, shards: Sequence[int],
          done: _Progress) -> Iterator[tuple[int, list[_Source]] | _ShardEnd]:
    """Batches of each shard still pending, then its end marker (planned lazily, in order)."""
    config = request.config
    for shard in shards:
        if shard in draft.committed_shards():
            done.skipped.append(shard)
            continue
        batches, quarantined = plan_shard_batches(
            _sources(draft.shard_entries(shard), request), short_side=config.short_side,
            batch_size=config.batch_size, skip_bad=config.skip_bad)
        for batch in batches:
            yield shard, batch
        yield _ShardEnd(shard, quarantined)


def _decoded(pool: ThreadPoolExecutor, work: Iterator, *, window: int,
             config: RelabelConfig, pin_memory: bool) -> Iterator[_DecodedBatch | _ShardEnd]:
    """``work`` with each batch decoded by ``pool``, up to ``window`` batches ahead, in order.

    When planning a later shard fails (a bad file without ``skip_bad``), what is already
    queued is yielded first, so the shards before it are still written; then it raises.
    """
    ahead: deque[Future | _ShardEnd] = deque()
    failure: Exception | None = None

    def resolve(item: Future | _ShardEnd) -> _DecodedBatch | _ShardEnd:
        return item.result() if isinstance(item, Future) else item

    try:
        while True:
            try:
                item = next(work)
            except StopIteration:
                break
            except (ValueError, OSError) as error:  # BadSample, a missing or changed file
                failure = error
                break
            if not isinstance(item, _ShardEnd):
                shard, sources = item
                item = pool.submit(decode_batch, shard, sources, short_side=config.short_side,
                                   skip_bad=config.skip_bad, pin_memory=pin_memory)
            ahead.append(item)
            while sum(isinstance(i, Future) for i in ahead) > window:
                yield resolve(ahead.popleft())
        while ahead:
            yield resolve(ahead.popleft())
    finally:
        for item in ahead:  # an error ended the run: don't decode what nobody will use
            if isinstance(item, Future):
                item.cancel()
    if failure is not None:
        raise failure


def _run_pipeline(model: nn.Module, draft: DraftVersion, request: RelabelRequest,
                  shards: Sequence[int], *, progress: bool) -> _Progress:
    """Decode threads -> teacher (this thread) -> writer thread, overlapped and bounded."""
    config = request.config
    device = next(model.parameters()).device
    done = _Progress()
    committed = set(draft.committed_shards())
    total = sum(len(draft.shard_entries(shard)) for shard in shards if shard not in committed)
    with tqdm(total=total, unit="img", desc=f"relabel {draft.version_id}", smoothing=0.1,
              disable=None if progress else True, dynamic_ncols=True) as bar, \
            ThreadPoolExecutor(config.decode_threads, thread_name_prefix="relabel-decode") as pool:
        writer = _ShardWriter(draft, config, bar, done)
        items = _decoded(pool, _work(draft, request, shards, done),
                         window=2 * config.decode_threads, config=config,
                         pin_memory=device.type == "cuda")
        try:
            for item in items:
                if isinstance(item, _ShardEnd) or item.inputs is None:
                    writer.put(item if isinstance(item, _ShardEnd) else (item, None))
                    continue
                outputs = run_model(model, item.inputs, amp=config.amp)
                writer.put((item, outputs))
        finally:
            items.close()  # cancels decoding ahead when an error ends the run
            writer.close()
    return done


def relabel_shards(request: RelabelRequest, *, version_id: str, shards: Sequence[int],
                   progress: bool = False) -> ShardStats:
    """Label and write ``shards`` of the draft ``version_id`` (any subset, any process).

    The request must be the one the draft was prepared from (checked: the version id is
    recomputed from the stored manifest, the teacher file's hash and the settings). Shards
    already committed are skipped. The teacher is loaded once per process.
    """
    started = time.perf_counter()
    draft = LabelStore(request.store).draft(version_id)
    if draft.published or not shards:  # nothing to do: don't load the teacher
        return ShardStats(version_id=version_id, shards_written=[],
                          shards_skipped=list(shards), labelled=0, quarantined=[],
                          seconds=0.0, samples_per_s=0.0, **_this_process())
    sha = teacher_sha256(request.teacher)
    expected = _version_id(request, draft.manifest, sha)
    if expected != version_id:
        raise ValueError(
            f"this request describes version {expected}, not {version_id}: the teacher file "
            f"{request.teacher} or the relabel settings differ from the ones the draft was "
            "prepared with")
    device = resolve_device(request.config.device)
    model = cached_teacher(request.teacher, sha256=sha, weights=request.weights, device=device)
    done = _run_pipeline(model, draft, request, list(shards), progress=progress)
    seconds = time.perf_counter() - started
    return ShardStats(version_id=version_id, shards_written=done.written,
                      shards_skipped=done.skipped, labelled=done.labelled,
                      quarantined=done.quarantined, seconds=round(seconds, 3),
                      samples_per_s=round(done.labelled / seconds, 2) if seconds else 0.0,
                      **_this_process())


# --------------------------------------------------------------------------- publish


def publish_relabel(request: RelabelRequest, *, version_id: str) -> RelabelSummary:
    """Verify every shard and publish ``version_id`` (moves ``latest``); idempotent."""
    store = LabelStore(request.store)
    draft = store.draft(version_id)
    already = draft.published
    version = draft.publish()
    return summarize(version, store=request.store, already_published=already)


def summarize(version: LabelVersion, *, store: str, **extra: object) -> RelabelSummary:
    """A published version's id, counts and quarantine (scan and shard stages)."""
    document = version.document
    scan = [QuarantinedSample.model_validate(record)
            for record in document["metadata"].get("corpus", {}).get("scan_quarantine", [])]
    shard = [QuarantinedSample(sample_id=record["sample_id"], reason=record["reason"],
                               stage="shard") for record in document["quarantined"]]
    counts = {**document["counts"], "scan_quarantined": len(scan)}
    return RelabelSummary(version_id=version.version_id, store=store, corpus=version.corpus,
                          counts=counts, quarantined=scan + shard, **extra)


def with_scan_of(summary: RelabelSummary, plan: RelabelPlan) -> RelabelSummary:
    """``summary`` with the scan quarantine of THIS run's corpus scan.

    Files the scan skips are not part of the version id, so a version can be shared by two
    folders (or runs) that skipped different files; the version's recorded scan quarantine
    belongs to the run that created it and would be reported to the wrong one.
    """
    shard = [record for record in summary.quarantined if record.stage == "shard"]
    return summary.model_copy(update={
        "quarantined": list(plan.quarantined) + shard,
        "counts": {**summary.counts, "scan_quarantined": len(plan.quarantined)}})


def relabel(request: RelabelRequest, *, progress: bool = True) -> RelabelSummary:
    """Prepare, label every pending shard and publish, in this process (``mlb relabel``)."""
    started = time.perf_counter()
    plan = prepare_relabel(request)
    if plan.already_published:  # publish again: it repairs pointers a killed run left behind
        summary = with_scan_of(publish_relabel(request, version_id=plan.version_id), plan)
        return summary.model_copy(update={"resumed_shards": plan.shard_count,
                                          "seconds": round(time.perf_counter() - started, 3)})
    stats = relabel_shards(request, version_id=plan.version_id, shards=plan.pending_shards,
                           progress=progress)
    summary = with_scan_of(publish_relabel(request, version_id=plan.version_id), plan)
    return summary.model_copy(update={
        "resumed_shards": plan.shard_count - len(plan.pending_shards),
        "written_shards": len(stats.shards_written),
        "seconds": round(time.perf_counter() - started, 3),
        "samples_per_s": stats.samples_per_s if stats.shards_written else None})

