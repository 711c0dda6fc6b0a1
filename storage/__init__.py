"""Versioned, chunked zarr label stores (numpy + zarr + fsspec only: no torch, no prefect).

``storage.manifest`` describes a corpus by content; ``storage.labelstore`` keeps the teacher's
labels for it as immutable, content-addressed versions (design in its module docstring).
"""

from storage.draft import DraftVersion
from storage.errors import (
    DamagedShard,
    DamagedVersion,
    IncompleteVersion,
    LabelStoreError,
    VersionLocked,
    VersionNotFound,
)
from storage.labelstore import LabelStore, VerifyReport, VersionInfo, content_id
from storage.manifest import (
    FileMismatch,
    Manifest,
    ManifestEntry,
    build_manifest,
    check_files,
    file_sha256,
)
from storage.shards import QuarantineRecord, SampleLabels
from storage.version import LabelVersion

__all__ = [
    "DamagedShard",
    "DamagedVersion",
    "DraftVersion",
    "FileMismatch",
    "IncompleteVersion",
    "LabelStore",
    "LabelStoreError",
    "LabelVersion",
    "Manifest",
    "ManifestEntry",
    "QuarantineRecord",
    "SampleLabels",
    "VerifyReport",
    "VersionInfo",
    "VersionLocked",
    "VersionNotFound",
    "build_manifest",
    "check_files",
    "content_id",
    "file_sha256",
]
