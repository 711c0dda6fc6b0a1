"""Versioned label sets: the teacher's labels for a corpus, written once, read many times.

Running the teacher over a large corpus is the expensive step of MLB (method.md section 1,
"Offline form"), so its output is kept as an immutable *label version*:

- identity: ``content_id`` hashes everything that decides the stored bytes (the corpus
  manifest's digest, the teacher checkpoint's sha256, the blend settings, the store schema and
  a caller ``extra`` dict such as the inference size or ``store_teacher_alpha``). The same
  inputs give the same id, so a rerun finds (and resumes) the same version;
- content: per sample ``blended_alpha``, ``blended_boundary`` and optionally
  ``teacher_alpha``, (H, W) uint8 at the image's own size, in shards of ``shard_size``
  consecutive manifest entries (layout in ``storage.layout``, shard format in
  ``storage.shards``); plus the manifest, lineage/blend/teacher metadata, counts, quarantined
  samples with reasons and per-shard sha256 checksums;
- lifecycle: ``open_draft`` -> ``write_shard`` for every shard (any order, any processes,
  resumable; ``storage.draft``) -> ``publish`` (all shards verified, zarr metadata
  consolidated, ``version.json`` written) -> the ``latest`` pointers move -> read with
  ``open_version`` (``storage.version``). ``verify`` re-checks a version's bytes at any time.

Wall-clock times are kept out of every checksummed or compared file: they live in the
version's ``events.json`` only, so a resumed run and an uninterrupted run with the same inputs
store identical bytes everywhere else.

Concurrency: on a local file system, processes may write shards of one draft at once (OS file
locks per shard, released if a writer dies; see ``storage.draft``). On object stores there
are no locks: one run per version at a time is the caller's responsibility; reading is always
safe, since published versions never change.

    store = LabelStore("s3://bucket/labels")   # or a local path, or memory://...
    version_id = content_id(manifest=manifest, teacher_sha256=sha, blend=blend.model_dump())
    draft = store.open_draft(version_id, manifest=manifest, metadata={"lineage": {...}})
    for shard in draft.pending_shards():
        draft.write_shard(shard, labels_for(draft.shard_entries(shard)))
    version = draft.publish()
    version.read("0001").blended_alpha   # (H, W) uint8
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from storage.draft import DraftVersion, Progress, now_iso
from storage.errors import LabelStoreError, VersionNotFound
from storage.integrity import VersionIdOf, check_metadata, missing_chunks, special_files
from storage.layout import (
    SCHEMA_VERSION,
    StoreRoot,
    canonical_json,
    commit_path,
    committed_shards,
    latest_path,
    lock_path,
    promoted_path,
    shard_dir,
    shard_name,
    trainings_dir,
    version_dir,
    version_document,
)
from storage.locking import file_lock
from storage.manifest import Manifest
from storage.shards import check_shard, label_kinds
from storage.version import LabelVersion

ID_LENGTH = 16  # hex digits of the sha256 kept in a version id: 64 bits, collisions negligible
_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RECORD_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
DEFAULT_SHARD_SIZE = 64
VERSION_PROBLEMS = -1  # key of the version's own problems (documents, id) in VerifyReport
DEFAULT_LOCK_TIMEOUT_S = 600.0  # a shard write or a publish may take minutes on big images


def content_id(*, manifest: Manifest, teacher_sha256: str, blend: dict[str, Any],
               extra: dict[str, Any] | None = None) -> str:
    """The id of the label version made from these inputs: ``"v-"`` + 16 hex digits.

    ``blend`` and ``extra`` must be plain JSON values (``model_dump(mode="json")`` of a
    config); ``extra`` should hold everything else that changes the stored bytes.
    """
    if not isinstance(teacher_sha256, str) or not _SHA256.fullmatch(teacher_sha256):
        raise ValueError(f"teacher_sha256 must be 64 lowercase hex digits, got {teacher_sha256!r}")
    if not isinstance(blend, dict) or not isinstance(extra, dict | None):
        raise ValueError(f"blend and extra must be dicts, got {type(blend).__name__} and "
                         f"{type(extra).__name__}")
    inputs = {"schema": SCHEMA_VERSION, "manifest": manifest.digest(),
              "teacher_sha256": teacher_sha256, "blend": blend, "extra": extra or {}}
    return "v-" + hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:ID_LENGTH]


@dataclass(frozen=True)
class VersionInfo:
    """One version in ``LabelStore.versions()``; ``counts`` is None for a draft."""

    version_id: str
    corpus: str
    published: bool
    created_at: str | None
    counts: dict[str, Any] | None
    metadata: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class VerifyReport:
    """What ``LabelStore.verify`` found: ``ok`` is True when no checked shard is damaged.

    ``damaged_shards`` are shard numbers; ``problems`` says what is wrong with each. For a
    draft, only committed shards are checked and the others are listed in ``pending_shards``.
    """

    version_id: str
    ok: bool
    published: bool
    checked_shards: int
    damaged_shards: list[int]
    problems: dict[int, str]
    pending_shards: list[int]
    notes: list[str] = field(default_factory=list)  # facts that are not damage


class LabelStore:
    """A folder of label versions: a local path (created if missing) or any fsspec URL.

    ``lock_timeout_s`` bounds how long a writer waits for another one's lock (local stores);
    ``storage_options`` go to fsspec (credentials, endpoint, ...). Picklable.
    """

    def __init__(self, url: str | os.PathLike[str], *,
                 storage_options: dict[str, Any] | None = None,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self.lock_timeout_s = lock_timeout_s
        self.root  # noqa: B018 (creates a local store's folder now, not on first write)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_store, (self.url, self.storage_options, self.lock_timeout_s))

    def __repr__(self) -> str:
        return f"LabelStore({self.url!r})"

    @cached_property
    def root(self) -> StoreRoot:
        """The store's files (what a ``DraftVersion`` writes through)."""
        return StoreRoot(self.url, storage_options=self.storage_options)

    def open_draft(self, version_id: str, *, manifest: Manifest, metadata: dict[str, Any],
                   shard_size: int = DEFAULT_SHARD_SIZE,
                   store_teacher_alpha: bool = False) -> DraftVersion:
        """Create the draft of ``version_id``, or resume it if it exists with the same inputs.

        ``metadata`` (plain JSON) is kept in the version: lineage (parent version, teacher id,
        EMA round), blend settings, teacher info. ValueError naming the differing fields when
        an existing draft was opened with other inputs.
        """
        _check_version_id(version_id)
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
        draft = {
            "schema": SCHEMA_VERSION, "version": version_id, "corpus": manifest.corpus,
            "manifest_digest": manifest.digest(), "shard_size": shard_size,
            "shard_count": -(-len(manifest) // shard_size),
            "kinds": list(label_kinds(teacher_alpha=store_teacher_alpha)), "metadata": metadata,
        }
        canonical_json(draft)  # ValueError here, before anything is written
        with self.lock(version_id):
            existing = self.root.read_json(version_document(version_id, "draft.json"))
            if existing is None:
                self._create_draft(version_id, draft, manifest)
            elif canonical_json(existing) != canonical_json(draft):
                differing = sorted(k for k in draft if canonical_json(existing.get(k))
                                   != canonical_json(draft[k]))
                raise ValueError(f"version {version_id} already exists in {self.url} with other "
                                 f"{', '.join(differing)}; a version id must name one set of "
                                 "inputs (see content_id)")
        return DraftVersion(self, version_id, existing or draft, manifest)

    def draft(self, version_id: str) -> DraftVersion:
        """Reopen an existing draft (or published version) to write shards, e.g. in a worker."""
        draft = self.root.read_json(version_document(version_id, "draft.json"))
        manifest = self.root.read_bytes(version_document(version_id, "manifest.json"))
        if draft is None or manifest is None:
            raise VersionNotFound(f"no draft {version_id!r} in {self.url}: create it with "
                                  "open_draft first")
        return DraftVersion(self, version_id, draft, Manifest.from_json(manifest))

    def versions(self) -> list[VersionInfo]:
        """Every version and draft in the store, oldest first."""
        infos = [self._info(name) for name in self.root.list_names("versions")]
        return sorted((info for info in infos if info is not None),
                      key=lambda info: (info.created_at or "", info.version_id))

    def latest(self, *, corpus: str | None = None) -> str | None:
        """The last version published in the store (or for ``corpus``), None if none."""
        pointer = self.root.read_json(latest_path(corpus))
        if pointer is None:
            return None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
            raise LabelStoreError(f"{self.root.path(latest_path(corpus))} is damaged (expected "
                                  '{"version": ID}); rerun the relabel that published the '
                                  "version you want (it repairs the pointer)")
        return pointer["version"]

    def open_version(self, version_id: str) -> LabelVersion:
        """A published version by id, or ``"latest"``; VersionNotFound / IncompleteVersion."""
        version = LabelVersion(self.url, self._resolve(version_id),
                               storage_options=self.storage_options)
        version.document  # noqa: B018 (raises now if missing or unpublished)
        return version

    def verify(self, version_id: str, *, progress: Progress | None = None,
               version_id_of: VersionIdOf | None = None) -> VerifyReport:
        """Check everything a version is and recompute every committed shard's checksum from
        its stored bytes; never raises on damage (each problem names its file).

        For a published version, every document and array descriptor is checked too
        (``storage.integrity``), and ``version_id_of(document, manifest)`` (if given)
        recomputes the version id from the stored settings; those problems are listed under
        shard -1 ("the version") in ``problems``.
        """
        version_id = self._resolve(version_id)
        unreadable = special_files(self.root, version_dir(version_id))
        if unreadable:  # reading one would block or never end
            return VerifyReport(version_id, ok=False, published=True, checked_shards=0,
                                damaged_shards=[VERSION_PROBLEMS], pending_shards=[],
                                problems={VERSION_PROBLEMS: "not a regular file: "
                                          + ", ".join(unreadable)})
        try:
            published = self.root.read_json(version_document(version_id, "version.json"))
            draft = published or self.root.read_json(version_document(version_id, "draft.json"))
        except ValueError as error:
            return VerifyReport(version_id, ok=False, published=True, checked_shards=0,
                                damaged_shards=[VERSION_PROBLEMS], pending_shards=[],
                                problems={VERSION_PROBLEMS: str(error)})
        if draft is None:
            raise VersionNotFound(f"no label version {version_id!r} in {self.url}")
        problems, notes = {}, []
        version_problems = [problem for problem in [self._events_problem(version_id)]
                            if problem is not None]
        if published is None and self._was_published(version_id):
            missing = self.root.path(version_document(version_id, "version.json"))
            version_problems.append(f"{missing} is missing, but the version was published "
                                    "(events.json or a latest pointer says so)")
        if published is not None:
            check = check_metadata(self.root, version_id, published,
                                   version_id_of=version_id_of)
            notes = check.notes
            version_problems += check.problems
        if version_problems:
            problems[VERSION_PROBLEMS] = "; ".join(version_problems)
        notes += self._training_notes(version_id)
        try:
            shard_count = int(draft["shard_count"])
        except (KeyError, TypeError, ValueError):
            shard_count = 0
        committed = set(committed_shards(self.root, version_id))
        shards = range(shard_count) if published else sorted(committed)
        for shard in (progress or iter)(shards):
            problem = self._check_stored_shard(version_id, shard, published)
            if problem is not None:
                problems[shard] = problem
        return VerifyReport(version_id, ok=not problems, published=published is not None,
                            checked_shards=len(shards), damaged_shards=sorted(problems),
                            problems=problems,
                            pending_shards=sorted(set(range(shard_count)) - committed),
                            notes=notes)

    # ------------------------------------------------ lineage kept beside a version

    def record_training(self, version_id: str, key: str, record: dict[str, Any]) -> str:
        """Keep ``record`` (plain JSON about a checkpoint trained on the published
        ``version_id``) as ``trainings/<key>.json`` beside the version; returns its path.

        One file per key (the caller's: one per checkpoint), so concurrent trainings never
        overwrite each other's records. The record must name ``version_id`` as its
        ``label_version``. The version's own files, checksums and id do not change; verify
        lists the records in its notes and never counts them as the version's content.
        """
        version_id = self._resolve(version_id)
        if not isinstance(key, str) or not _RECORD_KEY.fullmatch(key):
            raise ValueError(f"training record key {key!r} is not usable: expected letters, "
                             "digits, '_' or '-'")
        if not isinstance(record, dict) or record.get("label_version") != version_id:
            raise ValueError(f"a training record of {version_id} must be a dict naming it as "
                             f"label_version, got {record!r:.200}")
        if not self.root.exists(version_document(version_id, "version.json")):
            raise VersionNotFound(f"no published label version {version_id!r} in {self.url}")
        relative = f"{trainings_dir(version_id)}/{key}.json"
        self.root.write_json(relative, record)
        return self.root.path(relative)

    def training_records(self, version_id: str) -> tuple[list[dict[str, Any]], list[str]]:
        """The training records beside ``version_id`` (sorted by key) and, separately, what
        is wrong with any that cannot be used (each names its file); never raises on them."""
        version_id = self._resolve(version_id)
        folder = trainings_dir(version_id)
        records, problems = [], []
        unreadable = {os.path.normpath(path) for path in special_files(self.root, folder)}
        for name in self.root.list_names(folder):
            path = self.root.path(f"{folder}/{name}")
            if not name.endswith(".json") or not _RECORD_KEY.fullmatch(name[:-5]):
                if not name.endswith(".partial"):  # a write in progress (or killed)
                    problems.append(f"{path}: not a training record (ignored)")
                continue
            if os.path.normpath(path) in unreadable:
                problems.append(f"{path}: not a regular file (ignored)")
                continue
            try:
                record = self.root.read_json(f"{folder}/{name}")
            except (ValueError, OSError) as error:
                problems.append(f"{path}: unreadable ({error}) (ignored)")
                continue
            if not isinstance(record, dict) or record.get("label_version") != version_id:
                named = record.get("label_version") if isinstance(record, dict) else None
                problems.append(f"{path}: names label version {named!r}, not {version_id} "
                                "(ignored)")
                continue
            records.append(record)
        return records, problems

    def _training_notes(self, version_id: str) -> list[str]:
        records, problems = self.training_records(version_id)
        notes = [f"{len(records)} training record(s) beside the version (lineage only: not "
                 "part of its bytes, checksums or id)"] if records else []
        return notes + [f"training record {problem}" for problem in problems]

    # ------------------------------------------------ the promoted pointer

    def promoted(self, corpus: str) -> str | None:
        """The version the corpus's current student learned from (set by a promotion), or
        None when no student of this corpus was promoted yet (and in stores older than the
        pointer)."""
        pointer = self.root.read_json(promoted_path(corpus))
        if pointer is None:
            return None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
            raise LabelStoreError(f"{self.root.path(promoted_path(corpus))} is damaged "
                                  '(expected {"version": ID}); the next promotion rewrites it')
        return pointer["version"]

    def move_promoted(self, version_id: str, corpus: str) -> None:
        """Point ``corpus``'s promoted pointer at the published ``version_id`` of that
        corpus (``latest`` is not touched)."""
        _check_version_id(version_id)
        document = self.root.read_json(version_document(version_id, "version.json"))
        if document is None:
            raise VersionNotFound(f"no published label version {version_id!r} in {self.url}")
        if document.get("corpus") != corpus:
            raise ValueError(f"version {version_id} labels corpus {document.get('corpus')!r}, "
                             f"not {corpus!r}; a promoted pointer names its own corpus' labels")
        with self._pointer_lock():
            self.root.write_json(promoted_path(corpus), {"version": version_id})

    def _check_stored_shard(self, version_id: str, shard: int, published: dict[str, Any] | None
                            ) -> str | None:
        folder = self.root.path(shard_dir(version_id, shard))
        where = f"shard {shard} of version {version_id} ({folder})"
        try:
            marker = self.root.read_json(commit_path(version_id, shard))
        except ValueError as error:
            return f"{where}: commit marker unreadable: {error}"
        if marker is None:
            return f"{where}: commit marker missing"
        try:
            expected = published and published["shard_checksums"].get(shard_name(shard))
        except (KeyError, TypeError, AttributeError):
            return f"{where}: version.json has no usable shard_checksums"
        if published and marker.get("checksum") != expected:
            return f"{where}: commit marker says {marker.get('checksum')}, version.json {expected}"
        store = self.root.zarr_store(shard_dir(version_id, shard), read_only=True)
        problem = check_shard(store, marker, consolidated=published is not None, where=where)
        missing = [] if problem is None else missing_chunks(self.root, version_id, shard, marker)
        return problem if not missing else f"{problem}; missing chunk files: {', '.join(missing)}"

    def _events_problem(self, version_id: str) -> str | None:
        """What is wrong with ``events.json`` (the version's times), if anything."""
        path = self.root.path(version_document(version_id, "events.json"))
        try:
            events = self.root.read_json(version_document(version_id, "events.json"))
        except ValueError as error:
            return f"{path} is damaged ({error}); it only records times: replace it with {{}}"
        if events is not None and not isinstance(events, dict):
            return f"{path} is not a JSON object; it only records times: replace it with {{}}"
        return None

    def _was_published(self, version_id: str) -> bool:
        try:
            events = self.root.read_json(version_document(version_id, "events.json")) or {}
            pointers = [self.root.read_json(latest_path())]
        except ValueError:
            return False
        return "published_at" in events or {"version": version_id} in pointers

    def _resolve(self, version_id: str) -> str:
        if version_id != "latest":
            _check_version_id(version_id)
            return version_id
        latest = self.latest()
        if latest is None:
            raise VersionNotFound(f"no version has been published in {self.url} yet")
        try:
            _check_version_id(latest)
        except ValueError:
            raise LabelStoreError(f"{self.root.path(latest_path())} names {latest!r}, not a "
                                  "version of this store; rerun the relabel that published "
                                  "the version you want (it repairs the pointer)") from None
        if not self.root.exists(version_dir(latest)):
            raise VersionNotFound(f"{self.root.path(latest_path())} names version {latest}, "
                                  "which is not in the store; rerun the relabel that published "
                                  "the version you want (it repairs the pointer)")
        return latest

    def _info(self, version_id: str) -> VersionInfo | None:
        published = self.root.read_json(version_document(version_id, "version.json"))
        document = published or self.root.read_json(version_document(version_id, "draft.json"))
        if document is None:  # a draft killed before its draft.json was written
            return None
        try:  # only the version's times: a damaged one is verify's to name, not list's
            events = self.root.read_json(version_document(version_id, "events.json")) or {}
        except ValueError:
            events = {}
        if not isinstance(events, dict):
            events = {}
        return VersionInfo(version_id, document["corpus"], published is not None,
                           events.get("created_at"), document.get("counts"),
                           document["metadata"])

    def _create_draft(self, version_id: str, draft: dict[str, Any], manifest: Manifest) -> None:
        # draft.json last: its presence means the draft and its manifest exist.
        self.root.write_json(version_document(version_id, "events.json"),
                              {"created_at": now_iso()})
        self.root.write_bytes(version_document(version_id, "manifest.json"),
                               manifest.to_json().encode())
        self.root.write_json(version_document(version_id, "draft.json"), draft)

    def lock(self, version_id: str, *, shard: int | None = None
              ) -> contextlib.AbstractContextManager[object]:
        """The draft's (or one shard's) exclusive lock; a no-op on non-local stores."""
        if not self.root.local:
            return contextlib.nullcontext()
        what = f"version {version_id}" if shard is None else f"shard {shard} of {version_id}"
        return file_lock(self.root.path(lock_path(version_id, shard)), what=what,
                         timeout_s=self.lock_timeout_s)

    def move_latest(self, version_id: str, corpus: str) -> None:
        """Point ``latest`` (store-wide and for ``corpus``) at ``version_id``."""
        with self._pointer_lock():
            self.root.write_json(latest_path(corpus), {"version": version_id})
            self.root.write_json(latest_path(), {"version": version_id})

    def repair_pointers(self, version_id: str, corpus: str, *, moved: bool) -> None:
        """Move the pointers to ``version_id`` unless they were moved for it already; then
        only a pointer that is missing, unreadable or names no published version is rewritten
        (a later version's pointer is left alone)."""
        if not moved:
            self.move_latest(version_id, corpus)
            return
        with self._pointer_lock():
            for path in (latest_path(corpus), latest_path()):
                if not self._pointer_sound(path):
                    self.root.write_json(path, {"version": version_id})

    def pointers_sound(self, corpus: str) -> bool:
        return all(self._pointer_sound(path) for path in (latest_path(corpus), latest_path()))

    def _pointer_sound(self, path: str) -> bool:
        try:
            pointer = self.root.read_json(path)
            named = pointer["version"]
            _check_version_id(named)
        except (ValueError, TypeError, KeyError):
            return False
        return self.root.exists(version_document(named, "version.json"))

    def _pointer_lock(self) -> contextlib.AbstractContextManager[object]:
        if not self.root.local:
            return contextlib.nullcontext()
        return file_lock(self.root.path("locks/latest.lock"), what=f"latest in {self.url}",
                         timeout_s=self.lock_timeout_s)

    def drop_locks(self, version_id: str) -> None:
        """Remove a published version's lock files."""
        # Safe once published: anyone still waiting on these locks finds the version
        # published and does nothing (write_shard and publish re-check under the lock).
        self.root.remove_tree(f"locks/{version_id}")


def _check_version_id(version_id: str) -> None:
    if (not isinstance(version_id, str) or not _VERSION_ID.fullmatch(version_id)
            or version_id == "latest"):
        raise ValueError(f"version id {version_id!r} is not usable: expected letters, digits, "
                         "'.', '_' or '-' (as made by content_id), and not 'latest'")


def _reopen_store(url: str, storage_options: dict[str, Any], lock_timeout_s: float) -> LabelStore:
    return LabelStore(url, storage_options=storage_options, lock_timeout_s=lock_timeout_s)

