"""Labelling shards: decode threads -> teacher (the calling thread) -> one writer thread.

A shard's samples are planned into batches by resized size (headers only), decoded and
hash-checked in ``decode_threads`` threads, run through the teacher, resized back, blended with
the coarse masks, quantised and written by the single writer thread; bounded queues keep
memory flat. See :mod:`mlb.labels.relabel` for identity, resumption and concurrency.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from mlb.blend import blend_labels_with, quantize_unit
from mlb.data.imageio import BadSample, image_size, read_image, read_mask, to_uint8
from mlb.inference import (
    InferenceBatch,
    pad_batch,
    resize_short_side,
    resized_size,
    run_model,
    to_original_size,
)
from mlb.labels.request import (
    RelabelConfig,
    RelabelRequest,
)
from mlb.labels.store import check_file_hash
from storage import (
    DraftVersion,
    ManifestEntry,
    QuarantineRecord,
    SampleLabels,
)

# --------------------------------------------------------------------------- one shard


@dataclass(frozen=True)
class _Source:
    """Where one manifest sample is read from now, and the hashes it must still have."""

    sample_id: str
    image_path: Path
    mask_path: Path
    image_sha256: str
    mask_sha256: str
    version_id: str


def _sources(entries: Sequence[ManifestEntry], request: RelabelRequest,
             version_id: str) -> list[_Source]:
    # Files are read from the request's folders by the manifest's file names: a moved corpus
    # keeps its version id (the manifest digest has no paths) and is checked by hash anyway.
    images, masks = Path(request.images), Path(request.masks)
    return [_Source(e.sample_id, images / Path(e.image_path).name,
                    masks / Path(e.mask_path).name, e.image_sha256, e.mask_sha256, version_id)
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


def _check_hash(path: Path, expected: str, source: _Source) -> None:
    check_file_hash(path, expected, sample_id=source.sample_id, version_id=source.version_id,
                    remedy="relabel it as a new version (run prepare again)")


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
        _check_hash(source.image_path, source.image_sha256, source)
        _check_hash(source.mask_path, source.mask_sha256, source)
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
    labels: list[SampleLabels] = []
    if decoded.inputs is None:  # every sample of the batch was quarantined
        return labels
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
    quarantined: list[QuarantineRecord] = field(default_factory=list)


class _ShardWriter:
    """The single writer thread: finishes batches (resize back, blend, quantise) in order and
    writes each shard once all its batches arrived. A bounded queue keeps memory flat."""

    def __init__(self, draft: DraftVersion, config: RelabelConfig, bar: tqdm,
                 done: _Progress) -> None:
        self._draft, self._config, self._bar, self._done = draft, config, bar, done
        self._queue: queue.Queue[object] = queue.Queue(maxsize=2)
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
        decoded, outputs = cast(tuple[_DecodedBatch, tuple[Tensor, Tensor]], item)
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
            self._done.quarantined.extend(quarantined)
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
            _sources(draft.shard_entries(shard), request, draft.version_id),
            short_side=config.inference.short_side,
            batch_size=config.inference.batch_size, skip_bad=config.skip_bad)
        for batch in batches:
            yield shard, batch
        yield _ShardEnd(shard, quarantined)


def _decoded(pool: ThreadPoolExecutor, work: Iterator[Any], *, window: int,
             config: RelabelConfig, pin_memory: bool
             ) -> Generator[_DecodedBatch | _ShardEnd, None, None]:
    """``work`` with each batch decoded by ``pool``, up to ``window`` batches ahead, in order.

    When planning a later shard fails (a bad file without ``skip_bad``), what is already
    queued is yielded first, so the shards before it are still written; then it raises.
    """
    ahead: deque[Future[Any] | _ShardEnd] = deque()
    failure: Exception | None = None

    def resolve(item: Future[Any] | _ShardEnd) -> _DecodedBatch | _ShardEnd:
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
                item = pool.submit(decode_batch, shard, sources,
                                   short_side=config.inference.short_side,
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


def run_pipeline(model: nn.Module, draft: DraftVersion, request: RelabelRequest,
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
                outputs = run_model(model, item.inputs, amp=config.inference.amp,
                                    channels_last=config.inference.channels_last)
                writer.put((item, outputs))
        finally:
            items.close()  # cancels decoding ahead when an error ends the run
            writer.close()
    return done


