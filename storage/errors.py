"""What can go wrong with a label store, as exceptions that name the version, shard or file.

All are ``ValueError`` or ``FileNotFoundError`` subclasses, so the CLI turns them into one
line and exit code 2 like every other user-facing error in mlb.
"""


class LabelStoreError(ValueError):
    """Base of the label store's errors."""


class VersionLocked(LabelStoreError):
    """Another live process holds the lock of a draft (or of one of its shards)."""


class IncompleteVersion(LabelStoreError):
    """A draft was published (or opened for reading) while some of its shards are pending."""


class DamagedShard(LabelStoreError):
    """A shard's stored bytes no longer match its checksum, or cannot be decoded at all."""


class DamagedVersion(LabelStoreError):
    """A published version's documents or descriptors no longer agree with what was written."""


class VersionNotFound(FileNotFoundError):
    """No version (or ``latest`` pointer) of that name exists in the store."""
