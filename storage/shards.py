"""One shard of a label version: its samples packed into 1-D zarr arrays, its index, checksum.

A shard holds up to ``shard_size`` consecutive manifest entries. Each label kind
(``blended_alpha``, ``blended_boundary`` and optionally ``teacher_alpha``) is ONE 1-D uint8
array: the shard's samples in manifest order, each flattened row-major and concatenated. So
images of any size keep their own resolution with no padding or resizing, and a sample is
read back with one contiguous slice ``[offset, offset + height * width)``. The index
(sample id, offset, height, width per sample) is the shard's commit marker.

Why these choices (measured facts in ``../shared/docs/environment.md``, zarr section):
- one zarr group per shard, written by one process and sized once before writing: writers in
  different processes are safe on different zarr arrays, but lose data when they share a
  chunk or resize an array;
- 1 MiB chunks with Zstd level 3 and its content checksum: a flipped stored byte makes the
  chunk fail to decode (``DamagedShard``) instead of returning wrong labels;
- the shard checksum (sha256) covers the index and the decoded bytes of every kind, so
  ``verify`` catches damage the codec cannot see (a deleted chunk reads back as zeros).
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr
import zarr.codecs

from storage.errors import DamagedShard
from storage.layout import canonical_json

BASE_KINDS = ("blended_alpha", "blended_boundary")
TEACHER_KIND = "teacher_alpha"
CHUNK_BYTES = 1 << 20
_CODEC = zarr.codecs.ZstdCodec(level=3, checksum=True)
_READ_BLOCK = 64 * CHUNK_BYTES  # bounds memory while checksumming a stored shard
# What zarr and its codecs raise on a stored shard that is damaged or incomplete: a failed
# Zstd frame or checksum (RuntimeError), a bad zarr.json (ValueError), a missing node (OSError).
DECODE_ERRORS = (RuntimeError, ValueError, OSError, KeyError)


@dataclass(frozen=True, eq=False)
class SampleLabels:
    """The labels of one sample at its own resolution: (H, W) uint8 arrays, 0-255 for [0, 1]."""

    sample_id: str
    blended_alpha: np.ndarray
    blended_boundary: np.ndarray
    teacher_alpha: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.blended_alpha.shape)

    def array(self, kind: str) -> np.ndarray | None:
        return getattr(self, kind)

    def column(self, kind: str) -> np.ndarray:
        """The ``kind`` labels flattened, for a sample already checked to hold them."""
        array = self.array(kind)
        if array is None:
            raise ValueError(f"sample {self.sample_id!r} has no {kind} labels")
        return array.ravel()


@dataclass(frozen=True)
class QuarantineRecord:
    """A manifest sample that has no labels in the version, and why (e.g. unreadable image).

    The one quarantine record of the product: a shard's commit marker keeps ``sample_id`` and
    ``reason``; the version's metadata keeps the corpus scan's records with ``stage="scan"``
    and the file's ``path``; relabel plans and summaries return both kinds.
    """

    sample_id: str
    reason: str
    stage: Literal["scan", "shard"] = "shard"
    """Found by the corpus ``scan`` (no sample in the manifest) or while labelling a
    ``shard`` (in the manifest, without labels)."""
    path: str | None = None
    """The offending file, where one is known."""

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError(f"quarantine of sample {self.sample_id!r} needs a non-empty "
                             f"reason, got {self.reason!r}")
        if self.stage not in ("scan", "shard"):
            raise ValueError(f"quarantine stage must be 'scan' or 'shard', got {self.stage!r}")


def label_kinds(*, teacher_alpha: bool) -> tuple[str, ...]:
    return (*BASE_KINDS, TEACHER_KIND) if teacher_alpha else BASE_KINDS


def check_sample(sample: SampleLabels, kinds: Sequence[str]) -> None:
    """Raise ValueError naming the sample and kind unless every kind is (H, W) uint8 alike."""
    shape = None
    for kind in (*BASE_KINDS, TEACHER_KIND):
        array = sample.array(kind)
        if kind not in kinds:
            if array is not None:
                raise ValueError(f"sample {sample.sample_id!r} has {kind} but this version does "
                                 "not store it (open_draft(..., store_teacher_alpha=True))")
            continue
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 2:
            found = (f"{array.dtype} array of shape {array.shape}"
                     if isinstance(array, np.ndarray) else type(array).__name__)
            raise ValueError(f"{kind} of sample {sample.sample_id!r} must be an (H, W) uint8 "
                             f"array, got {found}")
        if shape is not None and array.shape != shape:
            raise ValueError(f"{kind} of sample {sample.sample_id!r} has shape {array.shape}, "
                             f"expected {shape} like its other labels")
        shape = array.shape
    if shape is not None and 0 in shape:
        raise ValueError(f"sample {sample.sample_id!r} has empty labels of shape {shape}")


def shard_index(samples: Sequence[SampleLabels]) -> list[dict[str, Any]]:
    """Where each sample sits in the shard's arrays: id, offset, height, width (in order)."""
    index, offset = [], 0
    for sample in samples:
        height, width = sample.shape
        index.append({"sample_id": sample.sample_id, "offset": offset,
                      "height": height, "width": width})
        offset += height * width
    return index


def commit_marker(shard: int, kinds: Sequence[str], samples: Sequence[SampleLabels],
                  quarantined: Sequence[QuarantineRecord]) -> dict[str, Any]:
    """Shard ``shard``'s commit marker: index, quarantine and checksum of ``samples``' labels."""
    marker = {
        "shard": shard,
        "kinds": list(kinds),
        "samples": shard_index(samples),
        "quarantined": [{"sample_id": q.sample_id, "reason": q.reason} for q in quarantined],
    }
    columns = {kind: [sample.column(kind) for sample in samples] for kind in kinds}
    return {**marker, "checksum": shard_checksum(marker, columns)}


def shard_checksum(marker: dict[str, Any], columns: Mapping[str, Iterable[np.ndarray]]) -> str:
    """'sha256:<hex>' over the marker's shard, kinds, index and quarantine, then each kind's
    concatenated label bytes (``columns`` yields them in blocks), in ``marker["kinds"]`` order.
    """
    header = {key: marker[key] for key in ("shard", "kinds", "samples", "quarantined")}
    digest = hashlib.sha256(b"mlb-label-shard\n")
    digest.update(canonical_json(header).encode())
    for kind in marker["kinds"]:
        digest.update(b"\n" + kind.encode() + b"\n")
        for block in columns[kind]:
            digest.update(np.ascontiguousarray(block, dtype=np.uint8).data)
    return "sha256:" + digest.hexdigest()


def check_shard(store: zarr.storage.StoreLike, marker: dict[str, Any], *, consolidated: bool,
                where: str) -> str | None:
    """None if the stored shard still matches its marker's checksum, else what is wrong.

    Never raises for damage: undecodable chunks, missing arrays and malformed markers are
    all reported as the returned problem.
    """
    try:
        total = sum(sample["height"] * sample["width"] for sample in marker["samples"])
        arrays = open_arrays(store, marker["kinds"], consolidated=consolidated, where=where)
        for kind, array in arrays.items():
            if array.shape != (total,):
                return f"{where}: {kind} holds {array.shape} bytes, its index needs ({total},)"
        columns = {kind: stored_blocks(array, where=where) for kind, array in arrays.items()}
        checksum = shard_checksum(marker, columns)
    except DamagedShard as error:
        return str(error)
    except (KeyError, TypeError, AttributeError) as error:
        return f"{where}: commit marker is malformed ({error!r})"
    if checksum != marker["checksum"]:
        return (f"{where}: stored labels give checksum {checksum}, "
                f"its commit marker says {marker['checksum']}")
    return None


def write_shard_arrays(store: zarr.storage.StoreLike, samples: Sequence[SampleLabels],
                       kinds: Sequence[str]) -> None:
    """Create the shard's group and one array per kind, each sized once and written whole."""
    zarr.create_group(store=store, zarr_format=3, overwrite=True)
    total = sum(sample.blended_alpha.size for sample in samples)
    for kind in kinds:  # one kind at a time: peak memory is one column, not all of them
        array = zarr.create_array(store=store, name=kind, shape=(total,), dtype="uint8",
                                  chunks=(CHUNK_BYTES,), compressors=_CODEC, fill_value=0,
                                  zarr_format=3)
        if total:
            array[:] = np.concatenate([sample.column(kind) for sample in samples])


def consolidate(store: zarr.storage.StoreLike) -> None:
    """Write the group's consolidated metadata (only once the shard can no longer change)."""
    with _quiet_consolidated_warning():
        zarr.consolidate_metadata(store)


def open_arrays(store: zarr.storage.StoreLike, kinds: Sequence[str], *,
                consolidated: bool, where: str) -> dict[str, zarr.Array[Any]]:
    """The shard's arrays by kind; ``DamagedShard`` naming ``where`` if they cannot be opened."""
    try:
        with _quiet_consolidated_warning():
            group = zarr.open_group(store, mode="r", use_consolidated=consolidated)
            arrays = {kind: group[kind] for kind in kinds}
        if not all(isinstance(array, zarr.Array) for array in arrays.values()):
            raise DamagedShard(f"{where}: a label kind is a zarr group, not an array")
        return {kind: array for kind, array in arrays.items() if isinstance(array, zarr.Array)}
    except DECODE_ERRORS as error:
        raise DamagedShard(f"{where}: cannot open its zarr arrays: {error!r}") from error


def read_slice(array: zarr.Array[Any], start: int, stop: int, *, where: str) -> np.ndarray:
    try:
        return np.asarray(array[start:stop])
    except DECODE_ERRORS as error:
        raise DamagedShard(f"{where}: stored bytes cannot be decoded ({error!r}); the shard is "
                           "damaged, run verify on the version") from error


def stored_blocks(array: zarr.Array[Any], *, where: str) -> Iterator[np.ndarray]:
    """The array's decoded bytes in blocks of at most 64 MiB."""
    for start in range(0, array.shape[0], _READ_BLOCK):
        yield read_slice(array, start, min(start + _READ_BLOCK, array.shape[0]), where=where)


@contextlib.contextmanager
def _quiet_consolidated_warning() -> Iterator[None]:
    # zarr warns on every use that consolidated metadata is not yet in the v3 spec; we use it
    # only as a cache of the shard's own zarr.json files, written once at publish.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield
