"""Writing a label version: shards written in any order by any number of processes, resumable.

A draft is a version being written. Its shards are independent units of work: ``write_shard``
writes one shard's zarr arrays and then, last, its commit marker (atomic rename locally, one
PUT on object stores). A shard without a marker is pending, whatever files it has; the next
writer of that shard deletes them and writes it again, so a run killed at any moment
(SIGKILL included) resumes by rerunning it with the same inputs, and ends with the same bytes
as an uninterrupted run (wall-clock times live only in ``events.json``).

Concurrency on a local store: creating the draft and publishing it hold the draft's lock;
``write_shard(k)`` holds shard k's lock and re-checks k's marker under it, so Dask workers of
one run, or two whole runs, can write the same draft at once: each shard is written once and
a writer arriving second skips it. On object stores there are no locks (see storage.locking).
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from storage.errors import DamagedShard, IncompleteVersion
from storage.integrity import document_digests
from storage.layout import (
    StoreRoot,
    commit_path,
    committed_shards,
    local_write_error,
    shard_dir,
    shard_name,
    version_document,
)
from storage.manifest import Manifest, ManifestEntry
from storage.shards import (
    QuarantineRecord,
    SampleLabels,
    check_sample,
    check_shard,
    commit_marker,
    consolidate,
    write_shard_arrays,
)
from storage.version import LabelVersion

# e.g. tqdm.tqdm; storage itself does not import it
Progress = Callable[[Iterable[Any]], Iterable[Any]]


class DraftHost(Protocol):
    """What a draft needs from its store (``LabelStore`` provides it): the files, the locks,
    the ``latest`` pointers. Named here so that this module does not import the store's."""

    url: str

    @property
    def root(self) -> StoreRoot: ...

    def lock(self, version_id: str, *, shard: int | None = None
             ) -> AbstractContextManager[object]: ...

    def move_latest(self, version_id: str, corpus: str) -> None: ...

    def repair_pointers(self, version_id: str, corpus: str, *, moved: bool) -> None: ...

    def pointers_sound(self, corpus: str) -> bool: ...

    def drop_locks(self, version_id: str) -> None: ...

    def open_version(self, version_id: str) -> LabelVersion: ...

    def draft(self, version_id: str) -> DraftVersion: ...


class DraftVersion:
    """A version being written; get one from ``LabelStore.open_draft`` or ``LabelStore.draft``.

    Picklable (store URL and version id only), so a Dask task can receive it and write shards.
    """

    def __init__(self, store: DraftHost, version_id: str, draft: dict[str, Any],
                 manifest: Manifest) -> None:
        self.store, self.version_id = store, version_id
        self.manifest = manifest
        self.shard_size: int = draft["shard_size"]
        self.shard_count: int = draft["shard_count"]
        self.kinds: tuple[str, ...] = tuple(draft["kinds"])
        self.metadata: dict[str, Any] = draft["metadata"]
        self._draft = draft

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_draft, (self.store, self.version_id))

    def __repr__(self) -> str:
        return f"DraftVersion({self.version_id!r} in {self.store.url!r})"

    def shard_entries(self, shard: int) -> list[ManifestEntry]:
        """The manifest entries of shard ``shard`` (consecutive, ``shard_size`` at most)."""
        self._check_shard_number(shard)
        return list(self.manifest.entries[shard * self.shard_size:(shard + 1) * self.shard_size])

    def committed_shards(self) -> list[int]:
        """Shards with a commit marker, read fresh from the store on every call."""
        return committed_shards(self.store.root, self.version_id)

    def pending_shards(self) -> list[int]:
        """Shards without a commit marker (still to write, or half-written by a killed run)."""
        committed = set(self.committed_shards())
        return [shard for shard in range(self.shard_count) if shard not in committed]

    @property
    def published(self) -> bool:
        return self.store.root.exists(version_document(self.version_id, "version.json"))

    def write_shard(self, shard: int, samples: Sequence[SampleLabels],
                    quarantined: Sequence[QuarantineRecord] = ()) -> bool:
        """Write shard ``shard``: labels for its entries except the ``quarantined`` ones.

        ``samples`` plus ``quarantined`` must be exactly ``shard_entries(shard)`` (any order;
        stored in manifest order). Returns False, writing nothing, when the shard was already
        committed (by an earlier run or a concurrent writer), True when this call wrote it.
        """
        ordered, ordered_quarantine = self._arrange(shard, samples, quarantined)
        if self.published:
            return False
        with self.store.lock(self.version_id, shard=shard):
            root = self.store.root
            if root.exists(commit_path(self.version_id, shard)):
                return False
            root.remove_tree(shard_dir(self.version_id, shard))  # a killed writer's leftovers
            store = root.zarr_store(shard_dir(self.version_id, shard), read_only=False)
            try:
                write_shard_arrays(store, ordered, self.kinds)
            except OSError as error:  # full, read-only: no marker, so the shard stays pending
                raise local_write_error(root.path(shard_dir(self.version_id, shard)),
                                        error) from None
            marker = commit_marker(shard, self.kinds, ordered, ordered_quarantine)
            root.write_json(commit_path(self.version_id, shard), marker)  # last: commits
        return True

    def publish(self, *, progress: Progress | None = None) -> LabelVersion:
        """Verify every shard, write ``version.json``, then move the ``latest`` pointers.

        ``IncompleteVersion`` naming the pending shards if any; ``DamagedShard`` naming the
        shards whose stored bytes do not match their markers. Publishing a published version
        does nothing and returns it.
        """
        return self.publish_once(progress=progress)[0]

    def publish_once(self, *, progress: Progress | None = None) -> tuple[LabelVersion, bool]:
        """:meth:`publish`, and whether this call is the one that published the version
        (decided under the version's lock: of two concurrent publishers exactly one gets
        True, so a "published" notice goes out once)."""
        root = self.store.root
        if self._finished():  # nothing to write: also works on a read-only store
            return self.store.open_version(self.version_id), False
        wrote = False
        with self.store.lock(self.version_id):
            if not self.published:
                wrote = True
                markers = self._committed_markers()
                self._check_stored(markers, progress)
                for shard in range(self.shard_count):
                    try:
                        consolidate(root.zarr_store(shard_dir(self.version_id, shard),
                                                    read_only=False))
                    except OSError as error:  # rewritten whole by the rerun's publish
                        raise local_write_error(root.path(shard_dir(self.version_id, shard)),
                                                error) from None
                documents = document_digests(root, self.version_id, self.shard_count,
                                             list(self.kinds))
                root.write_json(version_document(self.version_id, "version.json"),
                                {**self._version_document(markers), "documents": documents})
            events = root.read_json(version_document(self.version_id, "events.json")) or {}
            # Also completes a publish killed (or out of disk space) before ``latest`` moved,
            # and repairs a pointer left missing or unreadable since.
            self.store.repair_pointers(self.version_id, self.manifest.corpus,
                                        moved="published_at" in events)
            if "published_at" not in events:
                events["published_at"] = now_iso()
                root.write_json(version_document(self.version_id, "events.json"), events)
        self.store.drop_locks(self.version_id)
        return self.store.open_version(self.version_id), wrote

    def _finished(self) -> bool:
        """Published, ``latest`` moved for it, and both pointers still sound."""
        try:
            events = self.store.root.read_json(
                version_document(self.version_id, "events.json")) or {}
        except ValueError:
            return False
        return (self.published and "published_at" in events
                and self.store.pointers_sound(self.manifest.corpus))

    def _committed_markers(self) -> dict[int, dict[str, Any]]:
        pending = self.pending_shards()
        if pending:
            shown = ", ".join(map(str, pending[:20])) + (" ..." if len(pending) > 20 else "")
            raise IncompleteVersion(
                f"version {self.version_id} cannot be published: {len(pending)} of "
                f"{self.shard_count} shards are pending (no commit marker): {shown}"
            )
        return {shard: self.store.root.read_json(commit_path(self.version_id, shard))
                for shard in range(self.shard_count)}

    def _check_stored(self, markers: dict[int, dict[str, Any]], progress: Progress | None) -> None:
        problems = []
        for shard in (progress or iter)(range(self.shard_count)):
            store = self.store.root.zarr_store(shard_dir(self.version_id, shard), read_only=True)
            where = f"shard {shard} of version {self.version_id}"
            problem = check_shard(store, markers[shard], consolidated=False, where=where)
            if problem is not None:
                problems.append(problem)
        if problems:
            raise DamagedShard(f"version {self.version_id} cannot be published, "
                               f"{len(problems)} damaged shard(s): " + "; ".join(problems))

    def _version_document(self, markers: dict[int, dict[str, Any]]) -> dict[str, Any]:
        quarantined = [record for shard in sorted(markers)
                       for record in markers[shard]["quarantined"]]
        labelled = sum(len(marker["samples"]) for marker in markers.values())
        counts = {"samples": len(self.manifest), "labelled": labelled,
                  "quarantined": len(quarantined)}
        checksums = {shard_name(shard): marker["checksum"] for shard, marker in markers.items()}
        return {**self._draft, "counts": counts, "quarantined": quarantined,
                "shard_checksums": checksums}

    def _arrange(self, shard: int, samples: Sequence[SampleLabels],
                 quarantined: Sequence[QuarantineRecord]
                 ) -> tuple[list[SampleLabels], list[QuarantineRecord]]:
        """Check samples + quarantine against the shard's entries; both in manifest order."""
        expected = [entry.sample_id for entry in self.shard_entries(shard)]
        given = [s.sample_id for s in samples] + [q.sample_id for q in quarantined]
        where = f"shard {shard} of version {self.version_id}"
        duplicates = sorted(i for i, count in Counter(given).items() if count > 1)
        unknown = sorted(set(given) - set(expected))
        missing = [i for i in expected if i not in set(given)]
        for problem, ids in (("given twice", duplicates), ("not in this shard", unknown),
                             ("missing (neither labelled nor quarantined)", missing)):
            if ids:
                raise ValueError(f"{where}: samples {problem}: {_abbreviate(ids)}; expected "
                                 f"exactly the shard's entries {_abbreviate(expected)}")
        for sample in samples:
            check_sample(sample, self.kinds)
        position = {sample_id: i for i, sample_id in enumerate(expected)}
        return (sorted(samples, key=lambda s: position[s.sample_id]),
                sorted(quarantined, key=lambda q: position[q.sample_id]))

    def _check_shard_number(self, shard: int) -> None:
        if not isinstance(shard, int) or not 0 <= shard < self.shard_count:
            raise ValueError(f"shard {shard!r} does not exist in version {self.version_id}: "
                             f"expected 0 <= shard < {self.shard_count}")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _abbreviate(ids: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}] ({len(ids)})"


def _reopen_draft(store: DraftHost, version_id: str) -> DraftVersion:
    return store.draft(version_id)

