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

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlb.checkpoint import Checkpoint, CheckpointError, read_checkpoint
from mlb.data.corpus import CorpusScan, find_segmentation_samples
from mlb.device import resolve_device
from mlb.labels.checks import check_corpus_identity, check_parent_version
from mlb.labels.identity import id_settings
from mlb.labels.metadata import (
    CorpusInfo,
    InferenceInfo,
    LabelVersionMetadata,
    Lineage,
    QuarantinedSample,
    TeacherInfo,
)
from mlb.labels.pipeline import run_pipeline
from mlb.labels.request import (
    RelabelPlan,
    RelabelRequest,
    RelabelSummary,
    ShardStats,
)
from mlb.labels.teacher import TEACHERS, teacher_sha256, this_process
from mlb.threads import follow_process_threads
from storage import (
    DraftVersion,
    LabelStore,
    LabelVersion,
    Manifest,
    VersionNotFound,
    build_manifest,
    content_id,
)

# --------------------------------------------------------------------------- identity


def version_inputs(request: RelabelRequest) -> dict[str, Any]:
    """The ``extra`` of the version's content id: settings that change the stored bytes."""
    config, inference = request.config, request.config.inference
    return id_settings(short_side=inference.short_side, weights=request.weights,
                       store_teacher_alpha=config.store_teacher_alpha,
                       batch_size=inference.batch_size, shard_size=config.shard_size,
                       amp=inference.amp)


def _version_id(request: RelabelRequest, manifest: Manifest, teacher_sha256: str) -> str:
    return content_id(manifest=manifest, teacher_sha256=teacher_sha256,
                      blend=request.config.blend.model_dump(mode="json"),
                      extra=version_inputs(request))


# --------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class _Identity:
    """What a request's version id is made from, and the id."""

    version_id: str
    teacher_sha256: str
    checkpoint: Checkpoint
    manifest: Manifest
    scan: CorpusScan


def _identify(request: RelabelRequest) -> _Identity:
    # The teacher first: a wrong path fails before the corpus is hashed.
    sha = teacher_sha256(request.teacher)
    checkpoint = read_checkpoint(request.teacher)
    if request.weights == "ema" and checkpoint.ema_state_dict is None:
        raise CheckpointError(f"{request.teacher} holds no EMA weights (weights='ema' was "
                              "asked for)")
    scan = find_segmentation_samples(request.images, request.masks,
                                     skip_bad=request.config.skip_bad,
                                     check_headers=False)  # headers are read per shard
    if not scan.samples:
        raise ValueError(f"no usable image/mask pairs in {request.images} and {request.masks} "
                         f"({scan.summary()})")
    manifest = build_manifest(
        ((s.sample_id, s.image_path, s.mask_path) for s in scan.samples),
        corpus=request.corpus_name)
    return _Identity(_version_id(request, manifest, sha), sha, checkpoint, manifest, scan)


def planned_version_id(request: RelabelRequest) -> str:
    """The id of the version ``request`` makes (or made), without writing anything: the
    corpus is scanned and hashed, as ``prepare_relabel`` does."""
    return _identify(request).version_id


def prepare_relabel(request: RelabelRequest, *,
                    run: Mapping[str, str] | None = None) -> RelabelPlan:
    """Scan the corpus, hash it into a manifest, compute the version id, open the draft.

    Resumes an existing draft of the same id (its recorded metadata wins) and reports a
    published one as ``already_published`` with no pending shards. ``run`` (e.g. the Prefect
    flow run's id) is recorded in a new draft's metadata; it is not an input of the id.
    """
    identity = _identify(request)
    sha, checkpoint, manifest, scan = (identity.teacher_sha256, identity.checkpoint,
                                       identity.manifest, identity.scan)
    version_id = identity.version_id
    scan_quarantine = [QuarantinedSample(sample_id=q.sample_id, reason=q.reason, stage="scan",
                                         path=str(q.path)) for q in scan.quarantine]
    store = LabelStore(request.store)
    check_parent_version(store, request.parent_version)
    check_corpus_identity(store, manifest, images=request.images,
                          named=request.corpus is not None)
    draft = _open_or_resume(store, version_id, request, manifest,
                            _metadata(request, checkpoint, sha, scan_quarantine, run=run))
    published = draft.published
    return RelabelPlan(
        version_id=version_id, store=request.store, corpus=manifest.corpus,
        samples=len(manifest), shard_count=draft.shard_count,
        pending_shards=[] if published else draft.pending_shards(),
        already_published=published, quarantined=scan_quarantine)


def _metadata(request: RelabelRequest, checkpoint: Checkpoint, sha: str,
              scan_quarantine: Sequence[QuarantinedSample], *,
              run: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Lineage, teacher, blend and inference settings kept in the version (plain JSON)."""
    config = request.config
    return LabelVersionMetadata(
        lineage=Lineage(parent_version=request.parent_version, ema_round=request.ema_round,
                        teacher_label_version=checkpoint.label_version),
        teacher=TeacherInfo(path=os.path.abspath(request.teacher), sha256=sha,
                            weights=request.weights, kind=checkpoint.kind,
                            step=checkpoint.step,
                            model=checkpoint.model_config.model_dump(mode="json")),
        blend=config.blend.model_dump(mode="json"),
        inference=InferenceInfo(short_side=config.inference.short_side,
                                batch_size=config.inference.batch_size,
                                amp=config.inference.amp, resize_back="bilinear"),
        corpus=CorpusInfo(name=request.corpus_name, images=os.path.abspath(request.images),
                          masks=os.path.abspath(request.masks),
                          scan_quarantine=tuple(scan_quarantine)),
        # The producer's name as the first release wrote it: a stored value, not a module path.
        producer="mlb.relabel",
        **({"run": dict(run)} if run else {}),  # unset: absent from the stored JSON
    ).to_stored()


def _open_or_resume(store: LabelStore, version_id: str, request: RelabelRequest,
                    manifest: Manifest, metadata: dict[str, Any]) -> DraftVersion:
    # An existing draft with this id was made from the same bytes-determining inputs (the id
    # covers them); its metadata may name other paths (a moved teacher or corpus), so it is
    # resumed as recorded instead of being compared field by field.
    try:
        return store.draft(version_id)
    except VersionNotFound:
        return store.open_draft(version_id, manifest=manifest, metadata=metadata,
                                shard_size=request.config.shard_size,
                                store_teacher_alpha=request.config.store_teacher_alpha)



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
                          seconds=0.0, samples_per_s=0.0, **this_process())
    sha = teacher_sha256(request.teacher)
    expected = _version_id(request, draft.manifest, sha)
    if expected != version_id:
        raise ValueError(
            f"this request describes version {expected}, not {version_id}: the teacher file "
            f"{request.teacher} or the relabel settings differ from the ones the draft was "
            "prepared with")
    threads = follow_process_threads()  # a Dask worker's --nthreads, in this pool thread too
    inference = request.config.inference
    model = TEACHERS.get(request.teacher, sha256=sha, weights=request.weights,
                         device=resolve_device(inference.device),
                         channels_last=inference.channels_last)
    done = run_pipeline(model, draft, request, list(shards), progress=progress)
    seconds = time.perf_counter() - started
    return ShardStats(version_id=version_id, shards_written=done.written,
                      shards_skipped=done.skipped, labelled=done.labelled,
                      quarantined=done.quarantined, seconds=round(seconds, 3),
                      samples_per_s=round(done.labelled / seconds, 2) if seconds else 0.0,
                      torch_threads=threads, **this_process())


# --------------------------------------------------------------------------- publish


def publish_relabel(request: RelabelRequest, *, version_id: str) -> RelabelSummary:
    """Verify every shard and publish ``version_id`` (moves ``latest``); idempotent."""
    store = LabelStore(request.store)
    version, published_now = store.draft(version_id).publish_once()
    # Decided under the version's lock: of two runs publishing the same version at once,
    # exactly one reports it as newly published (and the flow emits one event).
    return summarize(version, store=request.store, already_published=not published_now)


def summarize(version: LabelVersion, *, store: str, **extra: Any) -> RelabelSummary:
    """A published version's id, counts and quarantine (scan and shard stages)."""
    document = version.document
    scan = list(LabelVersionMetadata.parse(document["metadata"]).corpus.scan_quarantine)
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

