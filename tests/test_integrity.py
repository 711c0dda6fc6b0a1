"""The tamper matrix: every kind of file of a published version x every kind of damage.

One real store is made by ``mlb relabel`` (6 images of different sizes, 2 shards), then each
case damages a fresh copy of it on disk. ``mlb labels verify`` must name the damaged file (or
shard) and exit non-zero, and ``mlb train student`` must refuse the version with one
``mlb train: error:`` line before its first step (no checkpoint written). An untouched copy
verifies and trains: the test can fail.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import zarr
from relabel_corpus import make_corpus, make_teacher
from tiny_data import TINY_TRAIN_FLAGS

from mlb.cli import main

SHARD_SIZE = 3
COUNT = 6  # two shards of three, all read by one batch of six


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    images, masks = make_corpus(root / "corpus", COUNT)
    teacher = make_teacher(root / "teacher.pt")
    store = root / "store"
    assert main(["relabel", "--teacher", str(teacher), "--images", str(images), "--masks",
                 str(masks), "--store", str(store), "--short-side", "48", "--batch-size", "3",
                 "--shard-size", str(SHARD_SIZE), "--corpus", "portraits", "--quiet"]) == 0
    (version_id,) = [p.name for p in (store / "versions").iterdir()]
    return store, version_id


# --------------------------------------------------------------------------- damage kinds


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def _swap_files(first: Path, second: Path) -> None:
    a, b = first.read_bytes(), second.read_bytes()
    assert a != b, f"{first} and {second} are equal: swapping them would change nothing"
    first.write_bytes(b)
    second.write_bytes(a)


def _edit_chunk(version: Path) -> None:
    # A real edit through zarr: the chunk stays a valid Zstd frame with a valid checksum.
    array = zarr.open_array(str(version / "shards/00000/blended_alpha"), mode="r+")
    array[5] = (int(array[5]) + 77) % 256


def _swap_ids(entries: list[dict]) -> None:
    entries[0]["sample_id"], entries[1]["sample_id"] = (entries[1]["sample_id"],
                                                        entries[0]["sample_id"])


def _swap_checksums(document: dict) -> None:
    sums = document["shard_checksums"]
    sums["00000"], sums["00001"] = sums["00001"], sums["00000"]


def _swap_paths(document: dict) -> None:
    corpus = document["metadata"]["corpus"]
    corpus["images"], corpus["masks"] = corpus["masks"], corpus["images"]


def _set_dtype(document: dict) -> None:
    document["data_type"] = "int8"


def _set_consolidated_dtype(document: dict) -> None:
    document["consolidated_metadata"]["metadata"]["blended_boundary"]["data_type"] = "int8"


# Each case: (file kind, damage, function(version folder, store folder), what verify names).
CASES = {
    ("data chunk", "flip"): (lambda v, s: _flip_byte(v / "shards/00000/blended_alpha/c/0"),
                             "shard 0"),
    ("data chunk", "edit"): (lambda v, s: _edit_chunk(v), "shard 0"),
    ("data chunk", "delete"): (lambda v, s: (v / "shards/00001/blended_alpha/c/0").unlink(),
                               "shards/00001/blended_alpha/c/0"),
    ("data chunk", "swap"): (lambda v, s: _swap_files(v / "shards/00000/blended_alpha/c/0",
                                                      v / "shards/00000/blended_boundary/c/0"),
                             "shard 0"),
    ("shard index", "flip"): (lambda v, s: _flip_byte(v / "commits/00000.json"),
                              "commits/00000.json"),
    ("shard index", "edit"): (lambda v, s: _edit_json(
        v / "commits/00000.json", lambda d: d["samples"][1].update(offset=d["samples"][1]
                                                                   ["offset"] + 1)),
                              "commits/00000.json"),
    ("shard index", "delete"): (lambda v, s: _edit_json(
        v / "commits/00001.json", lambda d: d["samples"].pop()), "commits/00001.json"),
    ("shard index", "swap"): (lambda v, s: _edit_json(
        v / "commits/00000.json", lambda d: _swap_ids(d["samples"])), "commits/00000.json"),
    ("commit marker", "flip"): (lambda v, s: _flip_byte(v / "commits/00001.json"),
                                "commits/00001.json"),
    ("commit marker", "edit"): (lambda v, s: _edit_json(
        v / "commits/00001.json", lambda d: d.update(checksum="sha256:" + "0" * 64)),
                                "commits/00001.json"),
    ("commit marker", "delete"): (lambda v, s: (v / "commits/00001.json").unlink(),
                                  "commits/00001.json"),
    ("commit marker", "swap"): (lambda v, s: _swap_files(v / "commits/00000.json",
                                                         v / "commits/00001.json"),
                                "commits/00000.json"),
    ("version document", "flip"): (lambda v, s: _flip_byte(v / "version.json"), "version.json"),
    ("version document", "edit"): (lambda v, s: _edit_json(
        v / "version.json", lambda d: d["metadata"]["blend"].update(mode="hard")),
                                   "version.json"),
    ("version document", "delete"): (lambda v, s: (v / "version.json").unlink(),
                                     "version.json"),
    ("version document", "swap"): (lambda v, s: _edit_json(v / "version.json", _swap_checksums),
                                   "version.json"),
    ("manifest", "flip"): (lambda v, s: _flip_byte(v / "manifest.json"), "manifest.json"),
    ("manifest", "edit"): (lambda v, s: _edit_json(
        v / "manifest.json",
        lambda d: d["entries"][0].update(image_path=d["entries"][1]["image_path"])),
                           "manifest.json"),
    ("manifest", "delete"): (lambda v, s: (v / "manifest.json").unlink(), "manifest.json"),
    ("manifest", "swap"): (lambda v, s: _edit_json(v / "manifest.json",
                                                   lambda d: _swap_ids(d["entries"])),
                           "manifest.json"),
    ("draft document", "flip"): (lambda v, s: _flip_byte(v / "draft.json"), "draft.json"),
    ("draft document", "edit"): (lambda v, s: _edit_json(
        v / "draft.json", lambda d: d["metadata"]["teacher"].update(path="/elsewhere.pt")),
                                 "draft.json"),
    ("draft document", "delete"): (lambda v, s: (v / "draft.json").unlink(), "draft.json"),
    ("draft document", "swap"): (lambda v, s: _edit_json(v / "draft.json", _swap_paths),
                                 "draft.json"),
    ("array descriptor", "flip"): (lambda v, s: _flip_byte(
        v / "shards/00000/blended_alpha/zarr.json"), "blended_alpha/zarr.json"),
    ("array descriptor", "edit"): (lambda v, s: _edit_json(
        v / "shards/00000/blended_alpha/zarr.json", _set_dtype), "blended_alpha/zarr.json"),
    ("array descriptor", "delete"): (lambda v, s: (
        v / "shards/00000/blended_alpha/zarr.json").unlink(), "blended_alpha/zarr.json"),
    ("array descriptor", "swap"): (lambda v, s: _swap_files(
        v / "shards/00000/blended_alpha/zarr.json", v / "shards/00001/blended_alpha/zarr.json"),
                                   "blended_alpha/zarr.json"),
    ("group descriptor", "flip"): (lambda v, s: _flip_byte(v / "shards/00001/zarr.json"),
                                   "shards/00001/zarr.json"),
    ("group descriptor", "edit"): (lambda v, s: _edit_json(v / "shards/00001/zarr.json",
                                                           _set_consolidated_dtype),
                                   "shards/00001/zarr.json"),
    ("group descriptor", "delete"): (lambda v, s: (v / "shards/00001/zarr.json").unlink(),
                                     "shards/00001/zarr.json"),
    ("group descriptor", "swap"): (lambda v, s: _swap_files(v / "shards/00000/zarr.json",
                                                            v / "shards/00001/zarr.json"),
                                   "shards/00000/zarr.json"),
    # Files that would block a read or never end it (tried as an attacker would).
    ("data chunk", "fifo"): (lambda v, s: _replace_with_fifo(v / "shards/00000/blended_alpha/c/0"),
                             "not a regular file"),
    ("data chunk", "device link"): (lambda v, s: _replace_with_link(
        v / "shards/00000/blended_alpha/c/0", "/dev/zero"), "not a regular file"),
    ("manifest", "fifo"): (lambda v, s: _replace_with_fifo(v / "manifest.json"),
                           "not a regular file"),
    # A pointer holds one entry: there is nothing to swap inside it.
    ("pointer", "flip"): (lambda v, s: _flip_byte(s / "latest.json"), "latest.json"),
    ("pointer", "edit"): (lambda v, s: _edit_json(s / "latest.json",
                                                  lambda d: d.update(version="../../etc")),
                          "latest.json"),
    ("pointer", "delete"): (lambda v, s: (s / "latest.json").unlink(), "no version"),
}


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _replace_with_link(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def _damaged_copy(pristine, tmp_path, case):
    store, version_id = pristine
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    damage, _ = CASES[case]
    damage(copy / "versions" / version_id, copy)
    return copy, version_id


def _train(store: Path, out: Path, labels: str) -> int:
    flags = list(TINY_TRAIN_FLAGS)
    flags[flags.index("--batch-size") + 1] = str(COUNT)  # the first batch reads every shard
    return main(["train", "student", "--store", str(store), "--labels", labels, "--steps", "1",
                 "--out", str(out), *flags])


def test_an_untouched_copy_verifies_and_trains(pristine, tmp_path, capsys):
    store, _ = pristine
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    assert main(["labels", "verify", "latest", "--store", str(copy), "--quiet"]) == 0
    assert "every document, descriptor and the version id checked" in capsys.readouterr().out
    assert _train(copy, tmp_path / "student.pt", "latest") == 0
    assert (tmp_path / "student.pt").is_file()


@pytest.mark.parametrize("case", sorted(CASES), ids=lambda case: "-".join(case).replace(" ", "_"))
def test_verify_names_and_training_refuses_every_damage(pristine, tmp_path, capsys, case):
    copy, version_id = _damaged_copy(pristine, tmp_path, case)
    labels = "latest" if case[0] == "pointer" else version_id
    _, named = CASES[case]

    code = main(["labels", "verify", labels, "--store", str(copy), "--quiet"])
    captured = capsys.readouterr()
    assert code != 0, captured.out
    assert named in captured.err, captured.err
    assert "Traceback" not in captured.err

    out = tmp_path / "student.pt"
    assert _train(copy, out, labels) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mlb train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_a_version_from_before_document_digests_verifies_and_says_so(pristine, tmp_path,
                                                                     capsys):
    # The previous release wrote version.json exactly like this: the same document without
    # "documents" (storage.layout.document_bytes). Such stores must keep verifying.
    from storage.layout import document_bytes

    copy, version_id = _damaged_copy(pristine, tmp_path, ("pointer", "flip"))
    shutil.copy(pristine[0] / "latest.json", copy / "latest.json")  # undo: only the format
    path = copy / "versions" / version_id / "version.json"
    document = json.loads(path.read_text())
    del document["documents"]
    path.write_bytes(document_bytes(document))
    capsys.readouterr()
    assert main(["labels", "verify", version_id, "--store", str(copy), "--quiet"]) == 0
    assert "written before document digests were recorded" in capsys.readouterr().out
    # Its documents are still checked against each other.
    _edit_json(copy / "versions" / version_id / "draft.json",
               lambda d: d["metadata"]["teacher"].update(path="/elsewhere.pt"))
    assert main(["labels", "verify", version_id, "--store", str(copy), "--quiet"]) == 1
    assert "draft.json" in capsys.readouterr().err


def test_a_damaged_events_document_is_named_by_verify_and_listing_still_works(pristine, tmp_path,
                                                                              capsys):
    # events.json only records times (not part of the id or of training): verify names it,
    # list shows the version without its date, training is unaffected.
    store, version_id = pristine
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (copy / "versions" / version_id / "events.json").write_text("{{{")
    assert main(["labels", "verify", version_id, "--store", str(copy), "--quiet"]) == 1
    assert "events.json is damaged" in capsys.readouterr().err
    assert main(["labels", "list", "--store", str(copy)]) == 0
    assert version_id in capsys.readouterr().out
