"""Corpus manifests: which samples a label version was made from, by content.

A manifest lists, in a fixed order, every sample of a corpus: its id, the absolute paths of its
image and coarse mask, and the sha256 of both files. Its ``digest()`` (corpus name, ids and
hashes; not the paths, so moving a corpus keeps its labels) is one input of a label version's
content id (``storage.labelstore.content_id``), and its order decides which shard a sample
lands in. ``check_files`` tells training that a corpus file changed after it was labelled.

    manifest = build_manifest([("0001", "/data/img/0001.jpg", "/data/mask/0001.png")],
                              corpus="natural")
    assert check_files(manifest) == []
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

MANIFEST_FORMAT = "mlb-manifest/1"
# Corpus names become path components of the store (``corpora/<corpus>/latest.json``).
_CORPUS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Hashing is IO-bound (hashlib releases the GIL on large buffers), so a few threads help on
# network file systems without taking more than the two shared cores.
DEFAULT_HASH_WORKERS = 4


@dataclass(frozen=True)
class ManifestEntry:
    """One sample: its id, absolute source paths and the sha256 (64 hex) of both files."""

    sample_id: str
    image_path: str
    mask_path: str
    image_sha256: str
    mask_sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.sample_id, str) or not self.sample_id:
            raise ValueError(f"sample_id must be a non-empty string, got {self.sample_id!r}")
        for name in ("image_sha256", "mask_sha256"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SHA256.fullmatch(value):
                raise ValueError(
                    f"{name} of sample {self.sample_id!r} must be 64 lowercase hex digits, "
                    f"got {value!r}"
                )


@dataclass(frozen=True)
class FileMismatch:
    """A corpus file that no longer has the content it had when the manifest was built.

    ``actual_sha256`` is None when the file is missing.
    """

    sample_id: str
    role: str  # "image" or "mask"
    path: str
    expected_sha256: str
    actual_sha256: str | None


@dataclass(frozen=True)
class Manifest:
    """An ordered, immutable list of ``ManifestEntry`` with unique sample ids.

    ``corpus`` names the corpus (letters, digits, ``._-``; it is a path component in a label
    store). The order is kept as given: it is part of the digest and decides shard membership.
    """

    entries: tuple[ManifestEntry, ...]
    corpus: str
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __init__(self, entries: Iterable[ManifestEntry], corpus: str) -> None:
        object.__setattr__(self, "entries", tuple(entries))
        object.__setattr__(self, "corpus", corpus)
        if not isinstance(corpus, str) or not _CORPUS_NAME.fullmatch(corpus):
            raise ValueError(
                f"corpus name {corpus!r} is not usable: expected 1-128 characters from "
                "letters, digits, '.', '_' and '-', starting with a letter or digit"
            )
        positions: dict[str, int] = {}
        for position, entry in enumerate(self.entries):
            if not isinstance(entry, ManifestEntry):
                raise ValueError(f"manifest entry {position} is a {type(entry).__name__}, "
                                 "expected ManifestEntry")
            if entry.sample_id in positions:
                first = positions[entry.sample_id]
                raise ValueError(f"sample id {entry.sample_id!r} appears twice in corpus "
                                 f"{corpus!r} (entries {first} and {position})")
            positions[entry.sample_id] = position
        object.__setattr__(self, "_positions", positions)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._positions

    @property
    def sample_ids(self) -> list[str]:
        return [entry.sample_id for entry in self.entries]

    def position(self, sample_id: str) -> int:
        """Index of ``sample_id`` in ``entries`` (O(1)); KeyError naming it if absent."""
        try:
            return self._positions[sample_id]
        except KeyError:
            raise KeyError(f"sample {sample_id!r} is not in corpus {self.corpus!r}") from None

    def entry(self, sample_id: str) -> ManifestEntry:
        return self.entries[self.position(sample_id)]

    def digest(self) -> str:
        """sha256 (64 hex) of the corpus name and the ordered (id, image hash, mask hash)."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        # Paths are left out on purpose: the same files moved elsewhere are the same corpus.
        content = {
            "corpus": self.corpus,
            "samples": [[e.sample_id, e.image_sha256, e.mask_sha256] for e in self.entries],
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        """The manifest as a JSON document (one entry per line); ``from_json`` reads it back."""
        lines = [json.dumps(vars(entry), sort_keys=True, ensure_ascii=False)
                 for entry in self.entries]
        head = json.dumps({"corpus": self.corpus, "format": MANIFEST_FORMAT}, sort_keys=True,
                          ensure_ascii=False)
        return head[:-1] + ', "entries": [\n' + ",\n".join(lines) + "\n]}\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
            found = document.get("format") if isinstance(document, dict) else type(document)
            raise ValueError(f"not an mlb manifest: expected format {MANIFEST_FORMAT!r}, "
                             f"found {found!r}")
        return cls((ManifestEntry(**entry) for entry in document["entries"]),
                   corpus=document["corpus"])


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (64 hex) of a file's bytes, streamed; FileNotFoundError naming the path."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def build_manifest(
    samples: Iterable[tuple[str, str | os.PathLike[str], str | os.PathLike[str]]],
    *,
    corpus: str,
    workers: int = DEFAULT_HASH_WORKERS,
) -> Manifest:
    """Hash every (sample_id, image_path, mask_path) and return the manifest, sorted by id.

    Sorting makes the manifest (and so every label version id) independent of the order in
    which a folder was listed. Paths are stored absolute (``os.path.abspath``, links kept).
    A missing file raises FileNotFoundError naming the sample and the path.
    """
    rows = sorted((str(sample_id), os.path.abspath(image), os.path.abspath(mask))
                  for sample_id, image, mask in samples)
    files = [(sample_id, path) for sample_id, image, mask in rows for path in (image, mask)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(pool.map(_hash_named, files))
    entries = (
        ManifestEntry(sample_id, image, mask, digests[2 * i], digests[2 * i + 1])
        for i, (sample_id, image, mask) in enumerate(rows)
    )
    return Manifest(entries, corpus=corpus)


def check_files(
    manifest: Manifest,
    entries: Sequence[ManifestEntry] | None = None,
    *,
    workers: int = DEFAULT_HASH_WORKERS,
) -> list[FileMismatch]:
    """Re-hash the files of ``entries`` (default: all of the manifest); list those that changed.

    An empty list means every image and mask still has the content it was labelled from.
    """
    checked = manifest.entries if entries is None else tuple(entries)
    jobs = [(entry, role, getattr(entry, f"{role}_path"), getattr(entry, f"{role}_sha256"))
            for entry in checked for role in ("image", "mask")]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        actual = list(pool.map(_hash_or_none, [path for _, _, path, _ in jobs]))
    return [
        FileMismatch(entry.sample_id, role, path, expected, found)
        for (entry, role, path, expected), found in zip(jobs, actual, strict=True)
        if found != expected
    ]


def _hash_named(file: tuple[str, str]) -> str:
    sample_id, path = file
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"file {path} of sample {sample_id!r} does not exist") from None


def _hash_or_none(path: str) -> str | None:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        return None
