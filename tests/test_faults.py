"""File-system faults and everyday mistakes on the write path: each is one clear error.

Real faults, not simulated ones: a read-only bind mount, a full tmpfs (ENOSPC), a process
SIGKILLed between writing ``version.json`` and moving ``latest``, a decompression-bomb PNG,
a 2 x 4000 strip. Mounting needs root (and a kernel that allows it); where it does not, those
tests skip and say why. After each fault is fixed, rerunning the same command ends with a
complete, verified store whose pointers name the version.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from relabel_corpus import make_corpus, make_teacher, start_cli
from tiny_data import TINY_TRAIN_FLAGS, write_tiny_corpus, write_untrained_checkpoint

from mlb.cli import main
from mlb.data.imageio import write_png

COUNT = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    images, masks = make_corpus(root / "portraits", COUNT)
    return {"images": images, "masks": masks, "teacher": make_teacher(root / "teacher.pt"),
            "root": root}


def _relabel_args(inputs, store, *extra, images=None, masks=None):
    return ["relabel", "--teacher", str(inputs["teacher"]), "--images",
            str(images or inputs["images"]), "--masks", str(masks or inputs["masks"]),
            "--store", str(store), "--short-side", "48", "--batch-size", "2",
            "--shard-size", "2", "--quiet", *extra]


def _one_error(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"mlb {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _assert_complete(store: Path, capsys) -> str:
    """The store verifies and both pointers name its one version."""
    capsys.readouterr()
    assert main(["labels", "verify", "latest", "--store", str(store), "--quiet"]) == 0
    assert "ok" in capsys.readouterr().out
    (version,) = [p.name for p in (store / "versions").iterdir()]
    assert json.loads((store / "latest.json").read_text()) == {"version": version}
    corpora = list((store / "corpora").glob("*/latest.json"))
    assert [json.loads(p.read_text()) for p in corpora] == [{"version": version}]
    assert not list(store.rglob("*.partial"))
    return version


# --------------------------------------------------------------------------- mounts


def _mount(*arguments: str) -> None:
    result = subprocess.run(["mount", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({result.stderr.strip() or 'mount failed'}); "
                    "this fault needs root and a kernel that allows mounts")


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], check=False)


def _read_only(folder: Path, mounts: list[Path]) -> None:
    _mount("--bind", str(folder), str(folder))
    mounts.append(folder)
    _mount("-o", "remount,bind,ro", str(folder))


def test_a_read_only_store_is_a_clear_error_and_still_verifies(inputs, tmp_path, mounts,
                                                                capsys):
    store = tmp_path / "store"
    store.mkdir()
    _read_only(store, mounts)
    assert main(_relabel_args(inputs, store)) == 2
    line = _one_error(capsys.readouterr().err, "relabel")
    assert str(store) in line and "read-only" in line.lower()

    subprocess.run(["umount", str(store)], check=True)
    mounts.remove(store)
    assert main(_relabel_args(inputs, store)) == 0
    version = _assert_complete(store, capsys)

    # A published store on a read-only mount is still listed, verified and trained from.
    _read_only(store, mounts)
    assert main(["labels", "verify", version, "--store", str(store), "--quiet"]) == 0
    assert main(["labels", "list", "--store", str(store)]) == 0
    assert main(_relabel_args(inputs, store)) == 0  # already published: nothing to write
    out = tmp_path / "student.pt"
    assert main(["train", "student", "--store", str(store), "--steps", "1", "--out", str(out),
                 *TINY_TRAIN_FLAGS]) == 0


@pytest.mark.parametrize("free_fraction", [0.2, 0.6, 0.95])
def test_a_full_disk_is_a_clear_error_and_a_rerun_completes(inputs, tmp_path, mounts, capsys,
                                                            free_fraction):
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=3M", "tmpfs", str(disk))
    mounts.append(disk)
    # How much one relabel needs: measured on this very file system, then removed.
    before = shutil.disk_usage(disk).used
    assert main(_relabel_args(inputs, disk / "probe")) == 0
    needed = shutil.disk_usage(disk).used - before  # in the file system's own pages
    shutil.rmtree(disk / "probe")
    free = shutil.disk_usage(disk).free
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - int(needed * free_fraction)))

    store = disk / "store"
    capsys.readouterr()
    assert main(_relabel_args(inputs, store)) == 2
    line = _one_error(capsys.readouterr().err, "relabel")
    assert "No space left on device" in line or "full" in line, line
    assert str(disk) in line

    filler.unlink()
    assert main(_relabel_args(inputs, store)) == 0
    _assert_complete(store, capsys)


_FILL_BEFORE_LATEST = """
import os, shutil, sys
from storage.labelstore import LabelStore
move = LabelStore.move_latest
def fill_then_move(self, *args, **kwargs):
    filler = os.environ["FILLER"]
    with open(filler, "wb") as handle:  # the disk fills up just before `latest` moves
        handle.write(b"\\0" * shutil.disk_usage(os.path.dirname(filler)).free)
    return move(self, *args, **kwargs)
LabelStore.move_latest = fill_then_move
from mlb.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_while_moving_latest_leaves_no_partial_pointer(inputs, tmp_path, mounts,
                                                                   capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=3M", "tmpfs", str(disk))
    mounts.append(disk)
    store, filler = disk / "store", disk / "filler"
    full = subprocess.run([sys.executable, "-c", _FILL_BEFORE_LATEST,
                           *_relabel_args(inputs, store)], capture_output=True, text=True,
                          env={**os.environ, "FILLER": str(filler)})
    assert full.returncode == 2, full.stderr
    line = _one_error(full.stderr, "relabel")
    assert "latest.json" in line and "full" in line
    assert list((store / "versions").glob("*/version.json"))  # published, pointers not moved
    assert not list(store.rglob("*.partial"))

    filler.unlink()
    capsys.readouterr()
    assert main([*_relabel_args(inputs, store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["already_published"]
    _assert_complete(store, capsys)


# --------------------------------------------------------------------------- a killed publish


_KILL_BEFORE_LATEST = """
import os, signal, sys
from storage.labelstore import LabelStore
LabelStore.move_latest = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
from mlb.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("older_version", [False, True])
def test_a_kill_between_version_document_and_latest_is_finished_by_a_rerun(
        inputs, tmp_path, capsys, older_version):
    store = tmp_path / "store"
    if older_version:  # another corpus published first: `latest` must not keep naming it
        images, masks = make_corpus(tmp_path / "other", 2, seed=5)
        assert main(_relabel_args(inputs, store, "--corpus", "other", images=images,
                                  masks=masks)) == 0
        capsys.readouterr()
    killed = subprocess.run([sys.executable, "-c", _KILL_BEFORE_LATEST,
                             *_relabel_args(inputs, store, "--corpus", "portraits")],
                            capture_output=True, text=True, env={**os.environ})
    assert killed.returncode == -9, killed.stderr
    (version,) = [p.parent.name for p in (store / "versions").glob("*/version.json")
                  if json.loads(p.read_text())["corpus"] == "portraits"]
    assert not (store / "corpora/portraits/latest.json").exists()

    assert main([*_relabel_args(inputs, store, "--corpus", "portraits"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["already_published"] and summary["version_id"] == version
    assert json.loads((store / "latest.json").read_text()) == {"version": version}
    assert json.loads((store / "corpora/portraits/latest.json").read_text()) == {
        "version": version}
    assert main(["labels", "verify", "latest", "--store", str(store), "--quiet"]) == 0


# --------------------------------------------------------------------------- bad images


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * (width + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["bomb", "strip"])
def test_a_decompression_bomb_or_extreme_strip_is_a_bad_sample(inputs, tmp_path, capsys, kind):
    images, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(inputs["images"], images)
    shutil.copytree(inputs["masks"], masks)
    if kind == "bomb":
        _bomb_png(images / "zz.png", 100_000, 100_000)
        _bomb_png(masks / "zz.png", 100_000, 100_000)
    else:
        write_png(images / "zz.png", np.full((2, 4000, 3), 128, np.uint8))
        write_png(masks / "zz.png", np.full((2, 4000), 255, np.uint8))
    store = tmp_path / "store"
    capsys.readouterr()
    assert main(_relabel_args(inputs, store, images=images, masks=masks)) == 2
    line = _one_error(capsys.readouterr().err, "relabel")
    assert "zz.png" in line and ("megapixels" in line or "bomb" in line or "aspect" in line)

    assert main([*_relabel_args(inputs, store, images=images, masks=masks), "--skip-bad",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [q["sample_id"] for q in summary["quarantined"]] == ["zz"]
    _assert_complete(store, capsys)


# --------------------------------------------------------------------------- identity


def test_two_corpora_with_one_folder_name_are_refused_with_a_hint(inputs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(_relabel_args(inputs, store)) == 0  # corpus name: "images"
    images, masks = make_corpus(tmp_path / "elsewhere", 2, seed=9)
    capsys.readouterr()
    assert main(_relabel_args(inputs, store, images=images, masks=masks)) == 2
    line = _one_error(capsys.readouterr().err, "relabel")
    assert "--corpus NAME" in line and str(images) in line
    assert main(_relabel_args(inputs, store, "--corpus", "elsewhere", images=images,
                              masks=masks)) == 0


def test_parent_version_must_exist(inputs, tmp_path, capsys):
    store = tmp_path / "store"
    for parent in ("../../etc", "v-0123456789abcdef"):
        assert main(_relabel_args(inputs, store, "--parent-version", parent)) == 2
        assert parent in _one_error(capsys.readouterr().err, "relabel")
    assert not (store / "versions").exists() or not list((store / "versions").iterdir())


# --------------------------------------------------------------------------- everyday mistakes


def test_everyday_mistakes_are_one_line_errors(inputs, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("e" * 300)
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a store")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    model = write_untrained_checkpoint(tmp_path / "model.pt")
    cases = [
        (_relabel_args(inputs, a_file), "relabel", "is a file"),
        (_relabel_args(inputs, ""), "relabel", "needs a folder"),
        (["relabel", "--teacher", str(text), "--images", str(inputs["images"]), "--masks",
          str(inputs["masks"]), "--store", str(tmp_path / "s1"), "--quiet"], "relabel",
         "not a checkpoint"),
        (["relabel", "--teacher", str(random_bytes), "--images", str(inputs["images"]),
          "--masks", str(inputs["masks"]), "--store", str(tmp_path / "s2"), "--quiet"],
         "relabel", "not a checkpoint"),
        (["labels", "list", "--store", str(tmp_path / "mistyped")], "labels",
         "does not exist"),
        (["labels", "verify", "latest", "--store", str(tmp_path / "mistyped")], "labels",
         "does not exist"),
        (["labels", "list", "--store", str(a_file)], "labels", "is a file"),
        (["predict", "--model", str(text), "--images", str(inputs["images"]), "--out",
          str(tmp_path / "p")], "predict", "not a checkpoint"),
        (["train", "teacher", "--matte", str(inputs["root"]), "--steps", "1", "--out",
          str(folder), "--init", str(model), *TINY_TRAIN_FLAGS], "train", "folder"),
        # a setting out of range: the config and field, the rule and the value, nothing of
        # pydantic's input dump or documentation link
        (_relabel_args(inputs, tmp_path / "s3", "--band-px", "-4"), "relabel",
         "BlendConfig.band_px: input should be greater than or equal to 1, got -4"),
        (["train", "teacher", "--matte", str(write_tiny_corpus(tmp_path, count=2).matte),
          "--steps", "1", "--out", str(tmp_path / "inf.pt"), *TINY_TRAIN_FLAGS, "--lr", "inf"],
         "train", "TrainConfig.lr: input should be a finite number, got inf"),
    ]
    for arguments, command, expected in cases:
        capsys.readouterr()
        assert main(arguments) == 2, arguments
        line = _one_error(capsys.readouterr().err, command)
        assert expected in line, (arguments, line)
        assert "weights_only=False" not in line and "will likely succeed" not in line
        assert "errors.pydantic.dev" not in line and "input_value" not in line
    assert not (tmp_path / "mistyped").exists()


def test_ctrl_c_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    corpus = write_tiny_corpus(tmp_path / "data", count=2)
    out = tmp_path / "teacher.pt"
    process = start_cli(["train", "teacher", "--matte", str(corpus.matte), "--steps", "500",
                         "--out", str(out), "--checkpoint-every", "1", *TINY_TRAIN_FLAGS],
                        # A shell that starts a command in the background sets SIGINT to
                        # "ignore", and children inherit it: give the CLI a terminal's default.
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = out.with_name(out.name + ".partial")
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert partial.exists(), process.communicate()
    process.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "mlb train: interrupted"
    assert partial.exists()  # the resume point of the same command


def test_dangling_and_looping_links_are_named(inputs, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(inputs["images"], images)
    shutil.copytree(inputs["masks"], masks)
    for stem in ("dangling", "looping"):
        shutil.copy(masks / "p000.png", masks / f"{stem}.png")
    (images / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (images / "looping.jpg").symlink_to("looping.jpg")
    store = tmp_path / "store"
    capsys.readouterr()
    assert main(_relabel_args(inputs, store, images=images, masks=masks)) == 2
    line = _one_error(capsys.readouterr().err, "relabel")
    assert ("symbolic link" in line and "dangling.jpg" in line) or "looping.jpg" in line
    assert main([*_relabel_args(inputs, store, images=images, masks=masks), "--skip-bad",
                 "--json"]) == 0
    reasons = {q["sample_id"]: q["reason"] for q in json.loads(capsys.readouterr().out)
               ["quarantined"]}
    assert "dangling" in reasons["dangling"] and "loops" in reasons["looping"]


def test_a_full_disk_while_saving_a_checkpoint_names_the_path(inputs, tmp_path, mounts,
                                                              capsys):
    store = tmp_path / "store"
    assert main(_relabel_args(inputs, store)) == 0
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=3M", "tmpfs", str(disk))  # the model needs ~15 MB
    mounts.append(disk)
    out = disk / "student.pt"
    capsys.readouterr()
    assert main(["train", "student", "--store", str(store), "--steps", "1", "--out", str(out),
                 *TINY_TRAIN_FLAGS]) == 2
    line = _one_error(capsys.readouterr().err, "train")
    assert str(out) in line and "free" in line and "inline_container" not in line
    assert not out.exists() and not list(disk.glob("*.partial"))


_DECODE_PEAK = """
import re, sys
from mlb.data.imageio import read_image

def peak():  # VmHWM: this process's own peak (ru_maxrss would include a forking parent's)
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) * 1024

before = peak()
image = read_image(sys.argv[1])
print((peak() - before) / image.nbytes)
"""


def test_decoding_a_large_image_holds_a_few_copies_of_it(tmp_path):
    """The bound docs/datasets.md states: about 3.4 copies of the RGB image at peak (PIL's
    decoded image, its bytes, the array). Run in a fresh process so the peak is its own."""
    from PIL import Image

    path = tmp_path / "large.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).resize((4000, 4000)).save(path, quality=90)
    result = subprocess.run([sys.executable, "-c", _DECODE_PEAK, str(path)], check=True,
                            capture_output=True, text=True)
    copies = float(result.stdout)
    assert copies < 4.0, f"decoding held {copies:.2f} copies of the image"


def test_the_scan_quarantine_reported_is_this_runs_own(inputs, tmp_path, capsys):
    # Files the scan skips are not in the version id: an orphan image in one folder and a
    # clean copy of the same corpus elsewhere share one version. Each run reports its own.
    orphaned = tmp_path / "orphaned"
    shutil.copytree(inputs["images"], orphaned / "images")
    shutil.copytree(inputs["masks"], orphaned / "masks")
    shutil.copy(orphaned / "images/p000.jpg", orphaned / "images/orphan.jpg")
    store = tmp_path / "store"
    capsys.readouterr()
    runs = [(orphaned / "images", orphaned / "masks", 1), (inputs["images"], inputs["masks"], 0)]
    versions = set()
    for images, masks, expected in runs:
        assert main([*_relabel_args(inputs, store, "--corpus", "portraits", images=images,
                                    masks=masks), "--skip-bad", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["counts"]["scan_quarantined"] == expected
        assert [q["sample_id"] for q in summary["quarantined"]] == ["orphan"][:expected]
        versions.add(summary["version_id"])
    assert len(versions) == 1


def test_a_short_side_beyond_the_limit_is_refused_before_any_work(inputs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main([*_relabel_args(inputs, store), "--short-side", "20000"]) == 2
    assert "8192" in _one_error(capsys.readouterr().err, "relabel")
    assert not store.exists()


def test_a_folder_given_as_out_is_named_as_such(inputs, tmp_path, capsys):
    folder = tmp_path / "runs"
    folder.mkdir()
    for extra in ([], ["--resume"], ["--overwrite"]):
        assert main(["train", "ddc", "--images", str(inputs["images"]), "--masks",
                     str(inputs["masks"]), "--steps", "1", "--out", str(folder),
                     *TINY_TRAIN_FLAGS, *extra]) == 2
        assert "is a folder" in _one_error(capsys.readouterr().err, "train")
