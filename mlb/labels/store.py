"""The label store as the rest of ``mlb`` and the flows use it: one way into ``storage``.

Callers outside :mod:`mlb.labels` import the store, its records and its errors from here, so
that a change of storage (a new backend, a new integrity check) has one place to land.
No torch: the CLI's listing commands import this without the network code.
"""

from storage import (
    IncompleteVersion,
    LabelStore,
    LabelStoreError,
    LabelVersion,
    VerifyReport,
    VersionInfo,
    VersionNotFound,
)

__all__ = [
    "IncompleteVersion",
    "LabelStore",
    "LabelStoreError",
    "LabelVersion",
    "VerifyReport",
    "VersionInfo",
    "VersionNotFound",
]
