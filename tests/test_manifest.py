"""Contract tests of storage.manifest: content hashes, digest, JSON round trip, change checks."""

import hashlib
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.manifest import (
    FileMismatch,
    Manifest,
    ManifestEntry,
    build_manifest,
    check_files,
    file_sha256,
)


def _corpus(folder, count=5):
    """``count`` (sample_id, image, mask) triples with distinct small files, listed unsorted."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in reversed(range(count)):
        image, mask = folder / f"img{i}.jpg", folder / f"mask{i}.png"
        image.write_bytes(f"image {i}".encode() * (i + 1))
        mask.write_bytes(f"mask {i}".encode())
        rows.append((f"s{i:03d}", image, mask))
    return rows


def test_build_manifest_hashes_files_sorts_by_id_and_keeps_absolute_paths(tmp_path):
    rows = _corpus(tmp_path / "corpus")
    manifest = build_manifest(rows, corpus="natural")
    assert manifest.sample_ids == sorted(sample_id for sample_id, _, _ in rows)
    entry = manifest.entry("s002")
    assert entry.image_path == str(tmp_path / "corpus" / "img2.jpg")
    assert os.path.isabs(entry.mask_path)
    assert entry.image_sha256 == hashlib.sha256(b"image 2" * 3).hexdigest()
    assert entry.mask_sha256 == file_sha256(tmp_path / "corpus" / "mask2.png")
    assert manifest.position("s004") == 4 and "s004" in manifest and "nope" not in manifest


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    _corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    manifest = build_manifest([("a", "img0.jpg", "mask0.png")], corpus="c")
    assert manifest.entry("a").image_path == str(tmp_path / "img0.jpg")


def test_missing_file_is_named_with_its_sample(tmp_path):
    rows = _corpus(tmp_path)
    rows.append(("ghost", tmp_path / "img0.jpg", tmp_path / "missing.png"))
    with pytest.raises(FileNotFoundError, match=r"missing\.png.*'ghost'"):
        build_manifest(rows, corpus="natural")


def test_digest_depends_on_content_ids_and_corpus_but_not_on_paths(tmp_path):
    rows = _corpus(tmp_path / "a")
    manifest = build_manifest(rows, corpus="natural")
    moved = build_manifest(_corpus(tmp_path / "b"), corpus="natural")
    assert moved.digest() == manifest.digest()
    assert build_manifest(rows, corpus="other").digest() != manifest.digest()
    assert build_manifest(rows[1:], corpus="natural").digest() != manifest.digest()
    (tmp_path / "a" / "mask3.png").write_bytes(b"edited")
    assert build_manifest(rows, corpus="natural").digest() != manifest.digest()


def test_json_round_trip_keeps_everything(tmp_path):
    manifest = build_manifest(_corpus(tmp_path), corpus="natural")
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest and again.digest() == manifest.digest()
    assert again.entries[0] == manifest.entries[0]


def test_from_json_rejects_other_documents():
    with pytest.raises(ValueError, match="not an mlb manifest"):
        Manifest.from_json('{"entries": []}')


def test_duplicate_ids_and_bad_names_and_hashes_are_rejected():
    entry = ManifestEntry("a", "/i", "/m", "0" * 64, "1" * 64)
    with pytest.raises(ValueError, match="'a' appears twice"):
        Manifest([entry, entry], corpus="c")
    with pytest.raises(ValueError, match="corpus name 'my corpus'"):
        Manifest([entry], corpus="my corpus")
    with pytest.raises(ValueError, match="image_sha256 of sample 'b'"):
        ManifestEntry("b", "/i", "/m", "xyz", "1" * 64)


def test_check_files_reports_changed_and_missing_files_only(tmp_path):
    rows = _corpus(tmp_path)
    manifest = build_manifest(rows, corpus="natural")
    assert check_files(manifest) == []
    (tmp_path / "img1.jpg").write_bytes(b"retouched")
    (tmp_path / "mask3.png").unlink()
    found = check_files(manifest)
    assert [(m.sample_id, m.role) for m in found] == [("s001", "image"), ("s003", "mask")]
    assert found[0] == FileMismatch("s001", "image", str(tmp_path / "img1.jpg"),
                                    manifest.entry("s001").image_sha256,
                                    hashlib.sha256(b"retouched").hexdigest())
    assert found[1].actual_sha256 is None
    assert check_files(manifest, [manifest.entry("s000"), manifest.entry("s002")]) == []


_ids = st.lists(st.text(string.ascii_letters + string.digits + "/_ é", min_size=1, max_size=12),
                unique=True, max_size=12)


@settings(max_examples=40, deadline=None)
@given(_ids, st.data())
def test_digest_is_order_sensitive_and_json_round_trip_is_exact(ids, data):
    def entry(sample_id):
        digest = hashlib.sha256(sample_id.encode()).hexdigest()
        return ManifestEntry(sample_id, f"/x/{sample_id}.jpg", f"/m/{sample_id}", digest, digest)

    entries = [entry(sample_id) for sample_id in ids]
    manifest = Manifest(entries, corpus="c")
    assert Manifest.from_json(manifest.to_json()) == manifest
    shuffled = data.draw(st.permutations(entries))
    same_order = list(shuffled) == entries
    assert (Manifest(shuffled, corpus="c").digest() == manifest.digest()) == same_order
