"""Reading a published label version: labels by sample id in O(1), from any process.

``read(sample_id)`` is a dict lookup (manifest position -> shard), the shard's commit marker
(its index, read once per shard and process) and one contiguous slice per label kind. Zarr
arrays are opened lazily and cached per process. A pickled ``LabelVersion`` carries only the
store URL and the version id, so DataLoader workers (spawned or forked) reopen it on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import zarr

from storage.errors import DamagedShard, DamagedVersion, IncompleteVersion, VersionNotFound
from storage.integrity import check_metadata, missing_chunks, special_files
from storage.layout import StoreRoot, shard_dir, version_dir, version_document
from storage.manifest import Manifest, ManifestEntry
from storage.shards import TEACHER_KIND, SampleLabels, check_shard, open_arrays, read_slice


@dataclass(frozen=True)
class _OpenShard:
    index: dict[str, tuple[int, int, int]]  # sample id -> (offset, height, width)
    arrays: dict[str, zarr.Array[Any]]


class LabelVersion:
    """A published, immutable label version (open it with ``LabelStore.open_version``).

    ``metadata`` is the caller's dict given to ``open_draft`` (lineage, blend, teacher, ...);
    ``document`` is the whole ``version.json`` (adds counts, quarantine, shard checksums).
    """

    def __init__(self, url: str, version_id: str, *,
                 storage_options: dict[str, Any] | None = None) -> None:
        self._url, self.version_id = url, version_id
        self._storage_options = dict(storage_options or {})
        self._shards: dict[int, _OpenShard] = {}
        self._markers: dict[int, dict[str, Any]] = {}  # filled by ``document`` once checked
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # Only names travel: every process reopens the store and its arrays on first use.
        return {"url": self._url, "version_id": self.version_id,
                "storage_options": self._storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        LabelVersion.__init__(self, state["url"], state["version_id"],
                      storage_options=state["storage_options"])

    def __repr__(self) -> str:
        return f"LabelVersion({self.version_id!r} in {self._url!r})"

    @cached_property
    def _root(self) -> StoreRoot:
        return StoreRoot(self._url, storage_options=self._storage_options)

    @cached_property
    def document(self) -> dict[str, Any]:
        unreadable = special_files(self._root, version_dir(self.version_id))
        if unreadable:
            raise DamagedVersion(f"version {self.version_id}: not a regular file: "
                                 f"{', '.join(unreadable[:5])}; run verify on it")
        try:
            document = self._root.read_json(version_document(self.version_id, "version.json"))
        except ValueError as error:
            raise DamagedVersion(f"version {self.version_id}: {error}; run verify on it") from None
        if document is not None:
            self._markers = self._checked_markers(document)
            return document
        if self._root.exists(version_document(self.version_id, "draft.json")):
            raise IncompleteVersion(f"version {self.version_id} in {self._url} is a draft that "
                                    "was never published; finish its shards and publish it")
        raise VersionNotFound(f"no label version {self.version_id!r} in {self._url}")

    @property
    def metadata(self) -> dict[str, Any]:
        return self.document["metadata"]

    @property
    def corpus(self) -> str:
        return self.document["corpus"]

    @cached_property
    def manifest(self) -> Manifest:
        data = self._root.read_bytes(version_document(self.version_id, "manifest.json"))
        if data is None:
            raise VersionNotFound(f"version {self.version_id} in {self._url} has no manifest.json")
        return Manifest.from_json(data)

    @cached_property
    def quarantined(self) -> dict[str, str]:
        """Sample id -> reason, for manifest samples that have no labels in this version."""
        return {record["sample_id"]: record["reason"] for record in self.document["quarantined"]}

    @cached_property
    def sample_ids(self) -> list[str]:
        """Ids of the labelled samples, in manifest order (quarantined ones left out)."""
        return [i for i in self.manifest.sample_ids if i not in self.quarantined]

    @property
    def has_teacher_alpha(self) -> bool:
        return TEACHER_KIND in self.document["kinds"]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self.manifest and sample_id not in self.quarantined

    def entry(self, sample_id: str) -> ManifestEntry:
        """Source paths and content hashes of a sample (quarantined ones included)."""
        return self.manifest.entry(sample_id)

    def read(self, sample_id: str, *, include_teacher_alpha: bool = True) -> SampleLabels:
        """The sample's labels at its original (H, W), uint8.

        KeyError naming the sample if it is not in the version or was quarantined;
        ``DamagedShard`` if its stored bytes cannot be decoded.
        """
        if sample_id in self.quarantined:
            raise KeyError(f"sample {sample_id!r} is quarantined in version {self.version_id}: "
                           f"{self.quarantined[sample_id]}")
        position = self.manifest.position(sample_id)
        shard = self._open_shard(position // self.document["shard_size"])
        offset, height, width = shard.index[sample_id]
        where = f"sample {sample_id!r} of version {self.version_id}"
        labels = {
            kind: read_slice(array, offset, offset + height * width, where=where)
            .reshape(height, width)
            for kind, array in shard.arrays.items()
            if include_teacher_alpha or kind != TEACHER_KIND
        }
        return SampleLabels(sample_id, **labels)

    def read_all(self) -> dict[str, SampleLabels]:
        """Every labelled sample (small versions and tests only: it holds them all in memory)."""
        return {sample_id: self.read(sample_id) for sample_id in self.sample_ids}

    def _open_shard(self, shard: int) -> _OpenShard:
        if self._pid != os.getpid():  # forked: async stores must not be shared with the parent
            self._shards, self._pid = {}, os.getpid()
        if shard not in self._shards:
            self._shards[shard] = self._load_shard(shard)
        return self._shards[shard]

    def _checked_markers(self, document: dict[str, Any]) -> dict[int, dict[str, Any]]:
        # Every document and descriptor, once per process, before any label is served
        # (small files only; the label bytes are checked per shard in _load_shard).
        check = check_metadata(self._root, self.version_id, document)
        if check.problems:
            shown = "; ".join(check.problems[:3])
            more = f" (and {len(check.problems) - 3} more)" if len(check.problems) > 3 else ""
            raise DamagedVersion(f"version {self.version_id} in {self._url} is damaged: "
                                 f"{shown}{more}; refusing to read it (run `mlb labels verify "
                                 f"{self.version_id}` for every problem, then relabel it)")
        return check.markers

    def _load_shard(self, shard: int) -> _OpenShard:
        folder = self._root.path(shard_dir(self.version_id, shard))
        where = f"shard {shard} of version {self.version_id} ({folder})"
        self.document  # noqa: B018 (checks the markers first)
        marker = self._markers[shard]
        index = {s["sample_id"]: (s["offset"], s["height"], s["width"]) for s in marker["samples"]}
        store = self._root.zarr_store(shard_dir(self.version_id, shard), read_only=True)
        arrays = open_arrays(store, self.document["kinds"], consolidated=True, where=where)
        # The shard's label bytes against its checksum, once per process before its first
        # sample is served: a deleted chunk (zarr reads it back as zeros), an edited
        # descriptor or a flipped byte is refused here, never trained on.
        problem = check_shard(store, marker, consolidated=True, where=where)
        if problem is not None:
            missing = missing_chunks(self._root, self.version_id, shard, marker)
            if missing:
                problem += f"; chunk file {missing[0]} is missing" + (
                    f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            raise DamagedShard(f"{problem}; refusing to read it (run `mlb labels verify "
                               f"{self.version_id}`, then relabel the version)")
        return _OpenShard(index, arrays)

