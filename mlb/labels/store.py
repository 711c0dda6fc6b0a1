"""The label store as the rest of ``mlb`` and the flows use it: one way into ``storage``.

Callers outside :mod:`mlb.labels` import the store, its records and its errors from here, so
that a change of storage (a new backend, a new integrity check) has one place to land.
It also holds the one check that a corpus file still has the bytes a version was made from,
and lends the store's flock (``file_lock``) to other files that concurrent runs share.
No torch: the CLI's listing commands import this without the network code.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage import (
    IncompleteVersion,
    LabelStore,
    LabelStoreError,
    LabelVersion,
    VerifyReport,
    VersionInfo,
    VersionLocked,
    VersionNotFound,
    file_sha256,
)
from storage.labelstore import VERSION_PROBLEMS
from storage.layout import check_store_url
from storage.locking import file_lock

__all__ = [
    "VERSION_PROBLEMS",
    "CorpusChanged",
    "IncompleteVersion",
    "LabelStore",
    "LabelStoreError",
    "LabelVersion",
    "VerifyReport",
    "VersionInfo",
    "VersionLocked",
    "VersionNotFound",
    "check_file_hash",
    "existing_store",
    "file_lock",
    "file_sha256",
    "store_location",
    "store_uri",
]


class CorpusChanged(ValueError):
    """A corpus file's bytes differ from the ones its label version was made from."""


def check_file_hash(path: str | os.PathLike[str], expected_sha256: str, *, sample_id: str,
                    version_id: str, remedy: str) -> None:
    """Hash ``path`` and raise :class:`CorpusChanged` naming it unless it matches; a missing
    file is a FileNotFoundError naming the sample and version. ``remedy`` ends the message.

    The file is read once here; the decoder that follows reads it again from the page cache.
    """
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} (sample {sample_id!r} of label version {version_id}) "
                                "no longer exists") from None
    if actual != expected_sha256:
        raise CorpusChanged(f"{path} (sample {sample_id!r}) changed since label version "
                            f"{version_id} was made from it: sha256 {actual}, expected "
                            f"{expected_sha256}; {remedy}")


def existing_store(path: str) -> LabelStore:
    """The store at ``path`` for reading: a local path that does not exist is an error, not a
    new empty store (a mistyped path must not be created)."""
    check_store_url(path)
    if "://" not in path and not os.path.isdir(path):
        raise FileNotFoundError(f"no label store at {path}: "
                                + ("it is a file, not a folder" if os.path.exists(path)
                                   else "the folder does not exist (check the --store path)"))
    return LabelStore(path)


def store_location(store: str | os.PathLike[str]) -> str:
    """The store as it can be used from anywhere, e.g. as ``--store``: an fsspec URL as given,
    a local path made absolute (what checkpoints and training records carry: a relative path
    read in another working directory would name another store)."""
    store = os.fspath(store)
    check_store_url(store)
    return store if "://" in store else os.path.abspath(store)


def store_uri(store: str | os.PathLike[str]) -> str:
    """The store as a URI: ``file:///...`` for a local path, an fsspec URL as given (what
    events and artifacts name)."""
    location = store_location(store)
    return location if "://" in location else Path(location).as_uri()
