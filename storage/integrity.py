"""Whole-version integrity: every document, descriptor and data byte of a published version.

What is bound to what (so that no single edit, deletion or swap can verify):

- ``version.json`` = ``draft.json`` + counts, quarantine and per-shard checksums. Its draft
  fields must equal ``draft.json``; counts and quarantine are recomputed from the commit
  markers; each shard checksum must equal the one its marker holds.
- ``manifest.json`` must have the digest ``version.json`` records (ids, order and source
  hashes): a swapped pair of sample ids changes it.
- each commit marker must index exactly its shard's manifest entries, in manifest order,
  with contiguous offsets; its checksum covers that index and every decoded label byte, so a
  sample id is bound to its position, its source hashes (through the manifest) and its labels.
- each array descriptor (``zarr.json``) must be a 1-D uint8 array of exactly the indexed size
  and agree with the shard's consolidated copy, which readers use.
- versions published by this release also record the sha256 of every one of these documents
  (``version.json["documents"]``); older versions lack it and are checked by the consistency
  rules above only (``check_metadata`` says so in its notes, not as a problem).
- the version id itself is recomputed from the stored manifest and settings by a caller-given
  function (the id's inputs are the producer's business, see ``mlb.labels.identity``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storage.layout import (
    StoreRoot,
    canonical_json,
    commit_path,
    shard_dir,
    shard_name,
    version_document,
)
from storage.manifest import Manifest
from storage.shards import CHUNK_BYTES

# Keys publish adds to the draft document to make version.json.
PUBLISHED_KEYS = ("counts", "quarantined", "shard_checksums", "documents")
VersionIdOf = Callable[[dict[str, Any], Manifest], "str | None"]


def sha256_tag(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def recorded_documents(shard_count: int, kinds: list[str]) -> list[str]:
    """Paths (relative to the version folder) of every document ``documents`` covers."""
    paths = ["draft.json", "manifest.json"]
    for shard in range(shard_count):
        name = shard_name(shard)
        paths += [f"commits/{name}.json", f"shards/{name}/zarr.json"]
        paths += [f"shards/{name}/{kind}/zarr.json" for kind in kinds]
    return paths


def document_digests(root: StoreRoot, version_id: str, shard_count: int,
                     kinds: list[str]) -> dict[str, str]:
    """sha256 of every covered document as stored now (call once they are final)."""
    digests = {}
    for relative in recorded_documents(shard_count, kinds):
        data = root.read_bytes(f"versions/{version_id}/{relative}")
        if data is None:
            raise FileNotFoundError(f"{root.path(f'versions/{version_id}/{relative}')} is "
                                    "missing; cannot publish")
        digests[relative] = sha256_tag(data)
    return digests


def missing_chunks(root: StoreRoot, version_id: str, shard: int, marker: dict[str, Any]
                   ) -> list[str]:
    """Paths of the shard's chunk files that do not exist (zarr would read them as zeros).

    Called only once a checksum has failed, to name the file: one listing per kind.
    """
    try:
        total = sum(s["height"] * s["width"] for s in marker["samples"])
        kinds = list(marker["kinds"])
    except (KeyError, TypeError):
        return []
    count = -(-total // CHUNK_BYTES)
    missing = []
    for kind in kinds:
        folder = f"{shard_dir(version_id, shard)}/{kind}/c"
        present = set(root.list_names(folder))
        missing += [root.path(f"{folder}/{i}") for i in range(count) if str(i) not in present]
    return missing


@dataclass
class MetadataCheck:
    """Problems (each naming a file) and notes (facts that are not damage) of one version."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    markers: dict[int, dict[str, Any]] = field(default_factory=dict)
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_metadata(root: StoreRoot, version_id: str, document: dict[str, Any], *,
                   version_id_of: VersionIdOf | None = None) -> MetadataCheck:
    """Check every document and descriptor of the published ``version_id``; never raises on
    damage. Reads only small files (no label bytes)."""
    check = MetadataCheck()
    folder = root.path(f"versions/{version_id}")
    try:
        _check(root, version_id, document, check, folder, version_id_of)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        check.problems.append(f"{folder}/version.json is malformed ({error!r})")
    return check


def _check(root: StoreRoot, version_id: str, document: dict[str, Any], check: MetadataCheck,
           folder: str, version_id_of: VersionIdOf | None) -> None:
    where = f"{folder}/version.json"
    if document.get("version") != version_id:
        check.problems.append(f"{where} names version {document.get('version')!r}, "
                              f"its folder {version_id!r}")
    recorded = document.get("documents")
    if recorded is None:
        check.notes.append("written before document digests were recorded: its documents are "
                           "checked against each other only")
    else:
        expected = set(recorded_documents(document["shard_count"], document["kinds"]))
        if set(recorded) != expected:
            check.problems.append(f"{where}: its list of document digests is altered")
        for relative, digest in sorted(recorded.items()):
            data = root.read_bytes(f"versions/{version_id}/{relative}")
            if data is None:
                check.problems.append(f"{folder}/{relative} is missing")
            elif sha256_tag(data) != digest:
                check.problems.append(f"{folder}/{relative} was altered: sha256 differs from "
                                      "the one recorded at publish")

    # draft.json: the version document minus what publish added.
    try:
        draft = root.read_json(version_document(version_id, "draft.json"))
    except ValueError as error:
        draft = None
        check.problems.append(str(error))
    else:
        if draft is None:
            check.problems.append(f"{folder}/draft.json is missing")
    if draft is not None:
        core = {k: v for k, v in document.items() if k not in PUBLISHED_KEYS}
        if canonical_json(draft) != canonical_json(core):
            differing = sorted(k for k in set(core) | set(draft)
                               if canonical_json(core.get(k)) != canonical_json(draft.get(k)))
            check.problems.append(f"{folder}/draft.json and version.json disagree on "
                                  f"{', '.join(differing)}")

    data = root.read_bytes(version_document(version_id, "manifest.json"))
    if data is None:
        check.problems.append(f"{folder}/manifest.json is missing")
        return
    try:
        manifest = Manifest.from_json(data)
    except (ValueError, KeyError, TypeError) as error:
        check.problems.append(f"{folder}/manifest.json cannot be read: {error}")
        return
    check.manifest = manifest
    if manifest.digest() != document["manifest_digest"]:
        check.problems.append(f"{folder}/manifest.json was altered: its digest is "
                              f"{manifest.digest()}, version.json records "
                              f"{document['manifest_digest']}")
    if manifest.corpus != document["corpus"]:
        check.problems.append(f"{folder}/manifest.json names corpus {manifest.corpus!r}, "
                              f"version.json {document['corpus']!r}")
    size = document["shard_size"]
    if document["shard_count"] != -(-len(manifest) // size):
        check.problems.append(f"{where}: shard_count {document['shard_count']} does not fit "
                              f"{len(manifest)} samples in shards of {size}")

    labelled, quarantined = 0, []
    for shard in range(document["shard_count"]):
        marker = _check_marker(root, version_id, shard, document, manifest, check)
        if marker is None:
            continue
        check.markers[shard] = marker
        labelled += len(marker["samples"])
        quarantined += marker["quarantined"]
        _check_descriptors(root, version_id, shard, document["kinds"], marker, check)
    if len(check.markers) == document["shard_count"]:
        counts = {"samples": len(manifest), "labelled": labelled,
                  "quarantined": len(quarantined)}
        if canonical_json(document.get("counts")) != canonical_json(counts):
            check.problems.append(f"{where}: counts {document.get('counts')} differ from the "
                                  f"commit markers' {counts}")
        if canonical_json(document.get("quarantined")) != canonical_json(quarantined):
            check.problems.append(f"{where}: its quarantine list differs from the commit "
                                  "markers'")
    extra = set(document["shard_checksums"]) - {shard_name(k)
                                                  for k in range(document["shard_count"])}
    if extra:
        check.problems.append(f"{where}: checksums of shards that do not exist: {sorted(extra)}")

    if version_id_of is not None:
        try:
            recomputed = version_id_of(document, manifest)
        except (KeyError, TypeError, ValueError) as error:
            check.problems.append(f"{where}: the settings its id is made from cannot be read "
                                  f"({error!r})")
        else:
            if recomputed is not None and recomputed != version_id:
                check.problems.append(f"{where}: the stored manifest and settings give version "
                                      f"id {recomputed}, not {version_id}: the version's "
                                      "inputs were altered")


def _check_marker(root: StoreRoot, version_id: str, shard: int, document: dict[str, Any],
                  manifest: Manifest, check: MetadataCheck) -> dict[str, Any] | None:
    path = root.path(commit_path(version_id, shard))
    try:
        marker = root.read_json(commit_path(version_id, shard))
    except ValueError as error:
        check.problems.append(f"shard {shard}: commit marker {error}")
        return None
    if marker is None:
        check.problems.append(f"shard {shard}: commit marker {path} is missing")
        return None
    expected = document["shard_checksums"].get(shard_name(shard))
    try:
        if marker.get("checksum") != expected:
            check.problems.append(f"shard {shard}: {path} holds checksum "
                                  f"{marker.get('checksum')}, version.json {expected}")
        size = document["shard_size"]
        entries = [e.sample_id for e in manifest.entries[shard * size:(shard + 1) * size]]
        indexed = [s["sample_id"] for s in marker["samples"]]
        held = set(indexed) | {q["sample_id"] for q in marker["quarantined"]}
        if (marker["shard"] != shard or marker["kinds"] != document["kinds"]
                or indexed != [i for i in entries if i in set(indexed)]
                or held != set(entries) or len(held) != len(indexed) + len(marker["quarantined"])):
            check.problems.append(f"shard {shard}: {path} does not index exactly this shard's "
                                  "manifest entries in manifest order")
        offset = 0
        for sample in marker["samples"]:
            if sample["offset"] != offset or sample["height"] < 1 or sample["width"] < 1:
                check.problems.append(f"shard {shard}: {path} has an altered offset or size "
                                      f"at sample {sample['sample_id']!r}")
                break
            offset += sample["height"] * sample["width"]
    except (KeyError, TypeError, AttributeError) as error:
        check.problems.append(f"shard {shard}: {path} is malformed ({error!r})")
        return None
    return marker


def _check_descriptors(root: StoreRoot, version_id: str, shard: int, kinds: list[str],
                       marker: dict[str, Any], check: MetadataCheck) -> None:
    """Each array's zarr.json: present, 1-D uint8 of the indexed size, equal to the group's
    consolidated copy (what readers open)."""
    folder = shard_dir(version_id, shard)
    total = sum(s["height"] * s["width"] for s in marker["samples"])
    try:
        group = json.loads(root.read_bytes(f"{folder}/zarr.json") or b"null")
        consolidated = (group or {}).get("consolidated_metadata", {}).get("metadata", {})
    except (ValueError, AttributeError):
        group, consolidated = None, {}
    if group is None:
        check.problems.append(f"shard {shard}: {root.path(folder)}/zarr.json is missing or "
                              "unreadable")
    for kind in kinds:
        path = f"{folder}/{kind}/zarr.json"
        try:
            descriptor = json.loads(root.read_bytes(path) or b"null")
        except ValueError:
            descriptor = None
        if descriptor is None:
            check.problems.append(f"shard {shard}: array descriptor {root.path(path)} is "
                                  "missing or unreadable")
            continue
        if (descriptor.get("data_type") != "uint8" or descriptor.get("shape") != [total]
                or (group is not None and consolidated.get(kind) != descriptor)):
            check.problems.append(f"shard {shard}: array descriptor {root.path(path)} was "
                                  f"altered (expected uint8 of shape [{total}], equal to the "
                                  "consolidated copy)")


def special_files(root: StoreRoot, relative: str) -> list[str]:
    """Files under ``relative`` (local stores) that are not regular files or folders: a FIFO,
    a device or a link to one would make a read block or never end (``/dev/zero``), so they
    are named as damage before anything is read."""
    if not root.local:
        return []
    found = []
    for folder, folders, files in os.walk(root.path(relative)):
        for name in [*folders, *files]:
            path = os.path.join(folder, name)
            try:
                mode = os.stat(path).st_mode
            except OSError:  # a dangling link: reads of it fail with a clear error
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                found.append(path)
    return sorted(found)
