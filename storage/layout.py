"""Where everything lives in a label store, and how its small JSON documents are written.

A store is a folder (local path or any fsspec URL) laid out as::

    latest.json                          {"version": id}: the store's last published version
    corpora/<corpus>/latest.json         the same, per corpus name
    corpora/<corpus>/promoted.json       {"version": id}: the labels the corpus's current
                                         student learned from (moved by a promotion only)
    locks/latest.lock                    local stores only: flock files (storage.locking)
    locks/<id>/draft.lock, shard-<k>.lock    removed once <id> is published
    versions/<id>/
        draft.json                       what the draft was opened with (manifest digest,
                                         shard size, kinds, caller metadata)
        manifest.json                    the corpus manifest (storage.manifest)
        shards/<k>/                      one zarr v3 group per shard, k zero-padded (00042)
            zarr.json                    consolidated at publish
            blended_alpha/ ...           1-D uint8 arrays: the shard's samples, concatenated
        commits/<k>.json                 shard k's commit marker: index + checksum (written last)
        version.json                     written by publish: the version is complete (adds
                                         counts, quarantine, shard checksums and the sha256
                                         of every document above: storage.integrity)
        events.json                      wall-clock times; the only file that differs between
                                         a resumed and an uninterrupted run
        trainings/<key>.json             one per checkpoint trained on the version (lineage,
                                         written when a training starts); not part of the
                                         version's documents, checksums or id

Documents are JSON with sorted keys, so equal content is equal bytes. On a local file system
each is written to ``<name>.partial`` and renamed into place (atomic); the ``.partial`` name is
fixed so that the next writer of that document, who holds the same lock, replaces any leftover
of a killed one. On object stores one PUT is already atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import fsspec
import zarr.storage
from fsspec.implementations.local import LocalFileSystem

SCHEMA_VERSION = 1  # of this layout; part of every content id


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: the bytes that content ids and checksums are taken over.

    Raises ValueError for values JSON cannot hold exactly (NaN, sets, arrays, objects).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"expected plain JSON values (dict, list, str, int, float, bool, "
                         f"None), got {error}") from None


def document_bytes(value: Any) -> bytes:
    """How a stored JSON document is written: key-sorted and indented, UTF-8, final newline."""
    canonical_json(value)  # the same validation and error
    return (json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def shard_dir(version_id: str, shard: int) -> str:
    return f"versions/{version_id}/shards/{shard_name(shard)}"


def commit_path(version_id: str, shard: int) -> str:
    return f"versions/{version_id}/commits/{shard_name(shard)}.json"


def committed_shards(root: StoreRoot, version_id: str) -> list[int]:
    """Shards of ``version_id`` that have a commit marker (one listing of ``commits/``)."""
    names = root.list_names(f"versions/{version_id}/commits")
    return sorted(int(name[: -len(".json")]) for name in names
                  if name.endswith(".json") and name[: -len(".json")].isdigit())


def version_dir(version_id: str) -> str:
    """The folder of one version (its documents, shards and commit markers)."""
    return f"versions/{version_id}"


def version_document(version_id: str, name: str) -> str:
    """Path of ``draft.json``, ``manifest.json``, ``version.json`` or ``events.json``."""
    return f"versions/{version_id}/{name}"


def latest_path(corpus: str | None = None) -> str:
    return "latest.json" if corpus is None else f"corpora/{corpus}/latest.json"


def promoted_path(corpus: str) -> str:
    return f"corpora/{corpus}/promoted.json"


def trainings_dir(version_id: str) -> str:
    return f"versions/{version_id}/trainings"


def lock_path(version_id: str, shard: int | None = None) -> str:
    name = "draft.lock" if shard is None else f"shard-{shard_name(shard)}.lock"
    return f"locks/{version_id}/{name}"


def check_store_url(url: str | os.PathLike[str]) -> None:
    """ValueError for a store location that cannot be meant (an empty string would be the
    current directory)."""
    if not isinstance(url, str | os.PathLike) or not os.fspath(url).strip():
        raise ValueError(f"a label store needs a folder or fsspec URL, got {url!r}")


def local_write_error(path: str, error: OSError) -> OSError:
    """``error`` (from writing ``path`` on a local disk) as an error that says what to do."""
    import errno

    remedy = {
        errno.ENOSPC: "the file system is full: free space (or use a store on another disk) "
                      "and rerun; what was written is kept and resumed",
        errno.EDQUOT: "the disk quota is exceeded: free space and rerun; what was written is "
                      "kept and resumed",
        errno.EROFS: "the file system is read-only: use a writable --store (a read-only store "
                     "can still be listed, verified and trained from)",
        errno.EACCES: "permission denied: make the store writable for this user or use "
                      "another --store",
        errno.EPERM: "operation not permitted: make the store writable for this user or use "
                     "another --store",
        errno.EEXIST: "a file is in the way where a folder is needed: give --store a folder",
        errno.ENOTDIR: "a file is in the way where a folder is needed: give --store a folder",
    }.get(error.errno or 0, "check the store's file system and rerun")
    wrapped = OSError(error.errno, f"cannot write {path}: {error.strerror or error}; {remedy}")
    return wrapped


class StoreRoot:
    """The file system and root folder of one store, addressed by '/'-separated relative paths.

    ``url`` is a local path (created if missing) or an fsspec URL; ``local`` says whether OS
    file locks and atomic renames are available.
    """

    def __init__(self, url: str | os.PathLike[str], *,
                 storage_options: dict[str, Any] | None = None) -> None:
        check_store_url(url)
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.root = self.root.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise FileExistsError(f"label store {self.root} is a file, not a folder: give "
                                      "--store a folder (new or existing)")
            try:
                os.makedirs(self.root, exist_ok=True)
            except OSError as error:
                raise local_write_error(self.root, error) from None

    def path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def read_bytes(self, relative: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            return None

    def read_json(self, relative: str) -> Any:
        """The parsed document, or None when it does not exist; ValueError naming it if bad."""
        data = self.read_bytes(relative)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError as error:
            raise ValueError(f"{self.path(relative)} is not valid JSON: {error}") from None

    def write_json(self, relative: str, value: Any) -> None:
        """Write a document atomically (see the module docstring); parents are created."""
        self.write_bytes(relative, document_bytes(value))

    def write_bytes(self, relative: str, data: bytes) -> None:
        target = self.path(relative)
        if not self.local:
            self.fs.pipe_file(target, data)
            return
        partial = target + ".partial"
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except OSError as error:
            # Only the .partial can be incomplete, and it is never read: the target keeps
            # its old bytes (or stays missing) and the next writer replaces the leftover.
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise local_write_error(target, error) from None

    def list_names(self, relative: str) -> list[str]:
        """Names directly inside a folder (sorted; empty when the folder does not exist)."""
        try:
            listing = self.fs.ls(self.path(relative), detail=False)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in listing)

    def remove_tree(self, relative: str) -> None:
        """Delete a folder and everything in it; nothing happens when it does not exist."""
        target = self.path(relative)
        with contextlib.suppress(FileNotFoundError):  # also when another process removes it
            self.fs.rm(target, recursive=True)

    def zarr_store(self, relative: str, *, read_only: bool) -> zarr.storage.StoreLike:
        """A zarr store rooted at ``relative`` (LocalStore locally, FsspecStore elsewhere)."""
        if self.local:
            return zarr.storage.LocalStore(self.path(relative), read_only=read_only)
        url = self.fs.unstrip_protocol(self.path(relative))
        return zarr.storage.FsspecStore.from_url(
            url, storage_options=self.storage_options or None, read_only=read_only
        )
