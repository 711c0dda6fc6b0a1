"""Contract tests of storage.labelstore on real zarr stores: on disk (tmp_path) and memory://.

Crash and concurrency tests run real processes (the writer script below): they SIGKILL
themselves mid-write, or write one draft two at a time, and the result is compared byte for
byte with an uninterrupted run.
"""

import hashlib
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import (
    DamagedShard,
    IncompleteVersion,
    LabelStore,
    Manifest,
    ManifestEntry,
    QuarantineRecord,
    SampleLabels,
    VersionLocked,
    VersionNotFound,
    content_id,
)
from storage.layout import lock_path

REPO = Path(__file__).resolve().parents[1]
TEACHER = hashlib.sha256(b"teacher checkpoint").hexdigest()
BLEND = {"mode": "soft", "band_px": None}
SHAPES = [(37, 91), (128, 64), (1, 1), (64, 128), (5, 300), (91, 37)]


def _manifest(count, *, corpus="natural", salt=""):
    def entry(i):
        digest = hashlib.sha256(f"{salt}{i}".encode()).hexdigest()
        return ManifestEntry(f"s{i:03d}", f"/corpus/{i}.jpg", f"/corpus/{i}.png", digest, digest)

    return Manifest([entry(i) for i in range(count)], corpus=corpus)


def _labels(sample_id, shape, *, teacher=True):
    rng = np.random.default_rng(int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16))
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    return SampleLabels(sample_id, arrays[0], arrays[1], arrays[2] if teacher else None)


def _write_all(draft, *, shapes=SHAPES, quarantine=(), order=None):
    """Write every shard of ``draft`` with random labels; returns them by sample id."""
    written = {}
    for shard in order if order is not None else range(draft.shard_count):
        samples, quarantined = [], []
        for entry in draft.shard_entries(shard):
            if entry.sample_id in quarantine:
                quarantined.append(QuarantineRecord(entry.sample_id, quarantine[entry.sample_id]))
                continue
            position = draft.manifest.position(entry.sample_id)
            shape = shapes[position % len(shapes)]
            written[entry.sample_id] = _labels(entry.sample_id, shape,
                                               teacher="teacher_alpha" in draft.kinds)
        samples = [written[e.sample_id] for e in draft.shard_entries(shard)
                   if e.sample_id in written]
        assert draft.write_shard(shard, samples[::-1], quarantined)  # any order is accepted
    return written


def _draft(store, manifest, *, shard_size=4, teacher=True, metadata=None):
    version_id = content_id(manifest=manifest, teacher_sha256=TEACHER, blend=BLEND,
                            extra={"teacher_alpha": teacher})
    metadata = metadata or {"lineage": {"parent": None, "ema_round": 0}, "blend": BLEND}
    return store.open_draft(version_id, manifest=manifest, metadata=metadata,
                            shard_size=shard_size, store_teacher_alpha=teacher)


def _assert_same(read, expected):
    for kind in ("blended_alpha", "blended_boundary", "teacher_alpha"):
        got, want = getattr(read, kind), getattr(expected, kind)
        assert (got is None) == (want is None), kind
        if want is not None:
            assert got.dtype == np.uint8 and got.shape == want.shape, kind
            np.testing.assert_array_equal(got, want, err_msg=kind)


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        yield LabelStore(tmp_path / "labels")
        return
    url = f"memory://labelstore-test-{uuid.uuid4().hex}"
    yield LabelStore(url)
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


# --- identity -----------------------------------------------------------------------------


def test_content_id_is_stable_and_changes_with_every_input():
    manifest = _manifest(10)
    base = content_id(manifest=manifest, teacher_sha256=TEACHER, blend=BLEND, extra={"size": 512})
    assert base.startswith("v-") and len(base) == 18
    assert base == content_id(manifest=_manifest(10), teacher_sha256=TEACHER,
                              blend=dict(reversed(BLEND.items())), extra={"size": 512})
    others = {
        content_id(manifest=_manifest(10, salt="x"), teacher_sha256=TEACHER, blend=BLEND,
                   extra={"size": 512}),
        content_id(manifest=manifest, teacher_sha256="0" * 64, blend=BLEND, extra={"size": 512}),
        content_id(manifest=manifest, teacher_sha256=TEACHER, blend={"mode": "hard"},
                   extra={"size": 512}),
        content_id(manifest=manifest, teacher_sha256=TEACHER, blend=BLEND, extra={"size": 640}),
        content_id(manifest=manifest, teacher_sha256=TEACHER, blend=BLEND),
    }
    assert base not in others and len(others) == 5
    with pytest.raises(ValueError, match="teacher_sha256"):
        content_id(manifest=manifest, teacher_sha256="abc", blend=BLEND)
    with pytest.raises(ValueError, match="plain JSON"):
        content_id(manifest=manifest, teacher_sha256=TEACHER, blend={"x": float("nan")})


# --- writing and reading ------------------------------------------------------------------


def test_round_trip_at_original_sizes(store):
    manifest = _manifest(15)
    draft = _draft(store, manifest)
    assert draft.shard_count == 4 and draft.pending_shards() == [0, 1, 2, 3]
    written = _write_all(draft, order=[3, 1, 0, 2])
    version = draft.publish()
    assert version.sample_ids == manifest.sample_ids and len(version) == 15
    for sample_id, labels in written.items():
        _assert_same(version.read(sample_id), labels)
    assert version.read("s000").shape == SHAPES[0]
    assert version.read("s001", include_teacher_alpha=False).teacher_alpha is None
    assert version.entry("s004") == manifest.entry("s004")
    assert version.metadata["lineage"] == {"parent": None, "ema_round": 0}
    assert version.document["counts"] == {"samples": 15, "labelled": 15, "quarantined": 0}
    assert store.verify(version.version_id).ok


@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 70), st.integers(1, 70)), min_size=1, max_size=9),
       st.integers(1, 4), st.booleans())
def test_any_sizes_and_shard_sizes_read_back_exactly(shapes, shard_size, teacher):
    store = LabelStore(f"memory://labelstore-property-{uuid.uuid4().hex}")
    try:
        draft = _draft(store, _manifest(len(shapes)), shard_size=shard_size, teacher=teacher)
        written = _write_all(draft, shapes=shapes)
        version = draft.publish()
        for sample_id, labels in written.items():
            _assert_same(version.read(sample_id), labels)
    finally:
        fsspec.filesystem("memory").rm(store.url.removeprefix("memory://"), recursive=True)


def test_a_read_touches_only_its_own_shard(tmp_path):
    store = LabelStore(tmp_path)
    draft = _draft(store, _manifest(12))
    written = _write_all(draft)
    version_id = draft.publish().version_id
    # Opening checks every (small) document; label bytes are read and checked per shard only.
    for shard in (0, 2):  # if read scanned every shard's labels, it would trip over these holes
        for chunk in (tmp_path / f"versions/{version_id}/shards/{shard:05d}").glob("*/c/*"):
            chunk.unlink()
    version = store.open_version(version_id)
    for sample_id in ("s004", "s005", "s006", "s007"):
        _assert_same(version.read(sample_id), written[sample_id])
    with pytest.raises(DamagedShard, match="shard 0"):
        version.read("s000")


def test_latest_moves_only_after_publish(store):
    first = _draft(store, _manifest(6))
    assert store.latest() is None
    _write_all(first)
    assert store.latest() is None and store.latest(corpus="natural") is None
    with pytest.raises(IncompleteVersion, match=first.version_id):
        store.open_version(first.version_id)
    with pytest.raises(VersionNotFound):
        store.open_version("latest")
    first.publish()
    assert store.latest() == store.latest(corpus="natural") == first.version_id
    assert store.open_version("latest").version_id == first.version_id

    second = _draft(store, _manifest(6, corpus="studio"))
    assert store.latest() == first.version_id
    _write_all(second)
    second.publish()
    assert store.latest() == store.latest(corpus="studio") == second.version_id
    assert store.latest(corpus="natural") == first.version_id
    infos = {info.version_id: info for info in store.versions()}
    assert infos.keys() == {first.version_id, second.version_id}
    assert all(info.published and info.created_at for info in infos.values())


def test_publishing_with_pending_shards_names_them(store):
    draft = _draft(store, _manifest(20))
    samples = [_labels(e.sample_id, (3, 4)) for e in draft.shard_entries(1)]
    draft.write_shard(1, samples)
    assert draft.pending_shards() == [0, 2, 3, 4]
    with pytest.raises(IncompleteVersion, match=r"4 of 5 shards are pending.*: 0, 2, 3, 4"):
        draft.publish()
    assert store.latest() is None
    assert not draft.write_shard(1, samples)  # committed shards are never rewritten


def test_quarantine_is_recorded_with_reasons_and_counts(store):
    reasons = {"s002": "image unreadable: truncated JPEG", "s005": "mask is empty"}
    draft = _draft(store, _manifest(8))
    written = _write_all(draft, quarantine=reasons)
    version = draft.publish()
    assert version.quarantined == reasons
    assert version.document["counts"] == {"samples": 8, "labelled": 6, "quarantined": 2}
    assert version.sample_ids == [i for i in draft.manifest.sample_ids if i not in reasons]
    assert "s002" not in version and "s003" in version
    with pytest.raises(KeyError, match=r"quarantined.*truncated JPEG"):
        version.read("s002")
    _assert_same(version.read("s003"), written["s003"])
    assert version.entry("s002").image_path == "/corpus/2.jpg"
    info = store.versions()[0]
    assert info.counts["quarantined"] == 2


def test_write_shard_rejects_anything_but_the_shards_samples(store):
    draft = _draft(store, _manifest(6), teacher=False)
    good = [_labels(e.sample_id, (2, 3), teacher=False) for e in draft.shard_entries(0)]
    with pytest.raises(ValueError, match=r"missing.*'s003'"):
        draft.write_shard(0, good[:3])
    with pytest.raises(ValueError, match=r"not in this shard.*'s004'"):
        draft.write_shard(0, [*good, _labels("s004", (2, 3), teacher=False)])
    with pytest.raises(ValueError, match=r"given twice.*'s000'"):
        twice = [QuarantineRecord("s000", "x"), QuarantineRecord("s000", "y")]
        draft.write_shard(0, good[1:], twice)
    with pytest.raises(ValueError, match=r"blended_boundary of sample 's000' must be an \(H, W\)"):
        draft.write_shard(0, [SampleLabels("s000", good[0].blended_alpha,
                                           good[0].blended_boundary.astype(np.float32)), *good[1:]])
    with pytest.raises(ValueError, match=r"has shape \(3, 2\), expected \(2, 3\)"):
        draft.write_shard(0, [SampleLabels("s000", good[0].blended_alpha,
                                           good[0].blended_boundary.T.copy()), *good[1:]])
    with pytest.raises(ValueError, match="does not store it"):
        draft.write_shard(0, [_labels("s000", (2, 3)), *good[1:]])
    with pytest.raises(ValueError, match="shard 2 does not exist"):
        draft.write_shard(2, good)
    with pytest.raises(ValueError, match="non-empty reason"):
        QuarantineRecord("s000", " ")
    assert draft.pending_shards() == [0, 1]


def test_an_existing_draft_cannot_be_reopened_with_other_inputs(store):
    manifest = _manifest(5)
    draft = _draft(store, manifest)
    again = _draft(store, manifest)  # same inputs: resumes
    assert again.version_id == draft.version_id and again.shard_count == 2
    with pytest.raises(ValueError, match="other shard_size; a version id"):
        store.open_draft(draft.version_id, manifest=manifest, metadata=draft.metadata,
                         shard_size=3, store_teacher_alpha=True)
    with pytest.raises(ValueError, match="other metadata"):
        store.open_draft(draft.version_id, manifest=manifest, metadata={"lineage": "x"},
                         shard_size=4, store_teacher_alpha=True)
    with pytest.raises(ValueError, match="version id 'latest'"):
        store.open_draft("latest", manifest=manifest, metadata={})


def test_publishing_twice_changes_nothing(tmp_path):
    store = LabelStore(tmp_path)
    draft = _draft(store, _manifest(5))
    _write_all(draft)
    draft.publish()
    before = _stored_files(tmp_path)
    again = store.draft(draft.version_id).publish()
    assert again.version_id == draft.version_id and _stored_files(tmp_path) == before
    assert store.open_draft(draft.version_id, manifest=draft.manifest, metadata=draft.metadata,
                            store_teacher_alpha=True, shard_size=4).pending_shards() == []


# --- damage -------------------------------------------------------------------------------


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_verify_names_the_shard_with_a_flipped_byte(tmp_path):
    store = LabelStore(tmp_path)
    draft = _draft(store, _manifest(12))
    written = _write_all(draft)
    version_id = draft.publish().version_id
    shard_folder = tmp_path / f"versions/{version_id}/shards"
    _flip_byte(shard_folder / "00001/blended_boundary/c/0")
    report = store.verify(version_id)
    assert not report.ok and report.damaged_shards == [1] and report.checked_shards == 3
    assert "shard 1" in report.problems[1]
    version = store.open_version(version_id)
    with pytest.raises(DamagedShard, match="shard 1 of version"):
        version.read("s004")
    _assert_same(version.read("s000"), written["s000"])  # other shards still read

    (shard_folder / "00002/teacher_alpha/c/0").unlink()  # reads back as zeros: checksum only
    marker = tmp_path / f"versions/{version_id}/commits/00000.json"
    document = json.loads(marker.read_text())
    document["samples"][1]["offset"] += 1
    marker.write_text(json.dumps(document))
    report = store.verify("latest")
    assert report.damaged_shards == [-1, 0, 1, 2]  # -1: the version's documents
    assert "commits/00000.json" in report.problems[-1]


def test_publish_refuses_a_damaged_shard(tmp_path):
    store = LabelStore(tmp_path)
    draft = _draft(store, _manifest(8))
    _write_all(draft)
    _flip_byte(tmp_path / f"versions/{draft.version_id}/shards/00001/blended_alpha/c/0")
    assert store.verify(draft.version_id).damaged_shards == [1]
    with pytest.raises(DamagedShard, match="shard 1 of version"):
        draft.publish()
    assert store.latest() is None


# --- processes: crashes, concurrency, pickling --------------------------------------------

WRITER = r'''
"""Writes every pending shard of the test version, then publishes; may SIGKILL itself."""
import hashlib, json, os, signal, sys, time
from pathlib import Path

import numpy as np
import zarr.storage

from storage import LabelStore, QuarantineRecord, SampleLabels, build_manifest, content_id

args = json.loads(sys.argv[1])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

if args.get("kill") == "mid_array":  # after the first chunk of shard 2, the others unwritten
    original_set = zarr.storage.LocalStore.set
    async def set_then_die(self, key, value, *rest, **options):
        await original_set(self, key, value, *rest, **options)
        if self.root.name == "00002" and "/c/" in key:
            die()
    zarr.storage.LocalStore.set = set_then_die
elif args.get("kill") in ("before_marker", "after_version_json"):
    original_replace = os.replace
    def replace_and_maybe_die(source, target):
        if args["kill"] == "before_marker" and str(target).endswith("commits/00003.json"):
            die()  # the marker's bytes are written to its .partial file, not yet renamed
        original_replace(source, target)
        if args["kill"] == "after_version_json" and str(target).endswith("version.json"):
            die()
    os.replace = replace_and_maybe_die

corpus = Path(args["corpus"])
rows = [(p.stem, p, corpus / (p.stem + ".png")) for p in corpus.glob("*.jpg")]
manifest = build_manifest(rows, corpus="natural")
version_id = content_id(manifest=manifest, teacher_sha256="ab" * 32, blend={"mode": "soft"},
                        extra={"teacher_alpha": True})
store = LabelStore(args["store"])
draft = store.open_draft(version_id, manifest=manifest, shard_size=4, store_teacher_alpha=True,
                         metadata={"lineage": {"parent": None, "ema_round": 0}})
while args.get("go") and not os.path.exists(args["go"]):
    time.sleep(0.01)
written = []
for shard in draft.pending_shards():
    samples, quarantined = [], []
    for entry in draft.shard_entries(shard):
        if entry.sample_id == "s13":
            quarantined.append(QuarantineRecord(entry.sample_id, "unreadable image"))
            continue
        number = int(entry.sample_id[1:])
        shape = (1100, 1000) if number == 9 else (37 + 5 * number, 91 - 3 * number)
        rng = np.random.default_rng(number)
        samples.append(SampleLabels(entry.sample_id, *(
            rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3))))
    if draft.write_shard(shard, samples, quarantined):
        written.append(shard)
draft.publish()
print(json.dumps({"version": version_id, "written": written}))
'''


@pytest.fixture(scope="module")
def writer(tmp_path_factory):
    """Runs the writer script in a fresh process; returns its CompletedProcess."""
    folder = tmp_path_factory.mktemp("writer")
    script, corpus = folder / "writer.py", folder / "corpus"
    script.write_text(WRITER)
    corpus.mkdir()
    for number in range(18):
        (corpus / f"s{number:02d}.jpg").write_bytes(f"image {number}".encode())
        (corpus / f"s{number:02d}.png").write_bytes(f"mask {number}".encode())

    def command(store, **options):
        return [sys.executable, str(script), json.dumps({"store": str(store),
                                                         "corpus": str(corpus), **options})]

    def run(store, **options):
        return subprocess.run(command(store, **options), capture_output=True, text=True,
                              env=_env(), timeout=120)

    run.command = command
    return run


@pytest.fixture(scope="module")
def reference(writer, tmp_path_factory):
    """The files of one uninterrupted run of the writer."""
    store = tmp_path_factory.mktemp("reference")
    done = writer(store)
    assert done.returncode == 0, done.stderr
    return store, json.loads(done.stdout)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}


def _stored_files(root):
    """Every stored file's bytes, except the documented timing file and the lock files."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(Path(root).rglob("*"))
        if path.is_file() and path.name != "events.json"
        and path.relative_to(root).parts[0] != "locks"
    }


def _assert_identical_files(root, reference_root):
    got, want = _stored_files(root), _stored_files(reference_root)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


@pytest.mark.parametrize("kill", ["mid_array", "before_marker", "after_version_json"])
def test_resume_after_sigkill_is_byte_identical(kill, writer, reference, tmp_path):
    reference_root, reference_run = reference
    store = tmp_path / "labels"
    killed = writer(store, kill=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert LabelStore(store).latest() is None  # never moved by a run that did not finish
    folder = store / "versions" / reference_run["version"]
    if kill == "mid_array":  # shard 2 has some of its 3 kinds x 2 chunks, and no marker
        assert 0 < len(list((folder / "shards/00002").rglob("c/*"))) < 6
        assert not (folder / "commits/00002.json").exists()
    elif kill == "before_marker":  # arrays and the marker's bytes written, marker not renamed
        assert (folder / "commits/00003.json.partial").exists()
        assert not (folder / "commits/00003.json").exists()
    else:
        assert (folder / "version.json").exists()
    shards = {"mid_array": [2, 3, 4], "before_marker": [3, 4], "after_version_json": []}[kill]
    resumed = writer(store)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["written"] == shards  # committed shards are kept
    _assert_identical_files(store, reference_root)
    assert LabelStore(store).latest() == reference_run["version"]
    assert LabelStore(store).verify("latest").ok


def test_two_concurrent_runs_share_the_work(writer, reference, tmp_path):
    reference_root, reference_run = reference
    store, go = tmp_path / "labels", tmp_path / "go"
    runs = [subprocess.Popen(writer.command(store, go=str(go)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    time.sleep(0.5)
    go.touch()  # both start writing shards at the same moment, in the same order
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    written = [json.loads(out)["written"] for out, _ in outputs]
    assert sorted(written[0] + written[1]) == [0, 1, 2, 3, 4]  # each shard written once
    _assert_identical_files(store, reference_root)
    assert LabelStore(store).verify(reference_run["version"]).ok


def _publish_in_child(root, version_id, barrier, queue):
    barrier.wait()
    queue.put(LabelStore(root).draft(version_id).publish_once()[1])


def test_of_two_concurrent_publishers_exactly_one_published_the_version(tmp_path):
    """The flow emits its "published" event from this answer: once per version."""
    store = LabelStore(tmp_path)
    draft = _draft(store, _manifest(9))
    _write_all(draft)
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(2), context.Queue()
    children = [context.Process(target=_publish_in_child,
                                args=(str(tmp_path), draft.version_id, barrier, queue))
                for _ in range(2)]
    for child in children:
        child.start()
    answers = sorted(queue.get(timeout=60) for _ in children)
    for child in children:
        child.join(timeout=60)
    assert answers == [False, True]
    assert store.draft(draft.version_id).publish_once()[1] is False  # a later rerun: False
    assert store.verify(draft.version_id).ok


HOLDER = r'''
import sys, time
from storage.locking import file_lock
with file_lock(sys.argv[1], what="test", timeout_s=1):
    print("held", flush=True)
    time.sleep(60)
'''


def test_open_draft_while_locked_names_the_holder_and_dies_with_it(tmp_path, caplog):
    store = LabelStore(tmp_path, lock_timeout_s=0.3)
    manifest = _manifest(4)
    version_id = content_id(manifest=manifest, teacher_sha256=TEACHER, blend=BLEND)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER,
                               str(tmp_path / lock_path(version_id))],
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(VersionLocked, match=rf"version {version_id} is locked by .*"
                                                rf"\"pid\": {holder.pid}"):
            store.open_draft(version_id, manifest=manifest, metadata={})
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the writer said once that it was waiting, and for whom (not a silent hang)
    waits = [record.getMessage() for record in caplog.records if "waiting" in record.getMessage()]
    assert len(waits) == 1
    assert f"version {version_id}: it is held by" in waits[0] and f'"pid": {holder.pid}' in waits[0]
    caplog.clear()
    assert store.open_draft(version_id, manifest=manifest, metadata={}).shard_count == 1
    assert not caplog.records  # a free lock: no notice


@pytest.fixture
def held_lock(tmp_path):
    """A lock file held by another process (the HOLDER script) until the test kills it."""
    path = tmp_path / "locks" / "held.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        yield path, holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_on_wait_is_called_once_while_another_process_holds_the_lock(held_lock):
    """The waiting notice is said once, however many polls the wait takes, and the lock is
    taken as soon as the holder dies."""
    import threading

    from storage.locking import file_lock

    path, holder = held_lock
    calls: list[float] = []
    killer = threading.Timer(1.0, holder.send_signal, args=(signal.SIGKILL,))
    started = time.monotonic()
    killer.start()
    try:
        with file_lock(str(path), what="test", timeout_s=30,
                       on_wait=lambda: calls.append(time.monotonic())):
            held_for = time.monotonic() - started
    finally:
        killer.cancel()
    assert len(calls) == 1 and calls[0] - started < 0.5  # before the first wait, not after
    assert held_for >= 0.9  # the body ran only once the holder was gone


def test_on_wait_is_never_called_for_a_free_lock(tmp_path):
    from storage.locking import file_lock

    calls: list[None] = []
    for _ in range(2):  # a lock file left by an earlier holder is free too
        with file_lock(str(tmp_path / "free.lock"), what="test", timeout_s=5,
                       on_wait=lambda: calls.append(None)):
            pass
    assert calls == []


@pytest.mark.parametrize(("timeout_s", "expected_calls"), [(0.3, 1), (0, 0)])
def test_a_lock_held_past_the_timeout_still_raises_after_on_wait(held_lock, timeout_s,
                                                                 expected_calls):
    """A timeout raises VersionLocked naming the holder, as without ``on_wait``; with no
    time to wait (``timeout_s`` 0) there is no wait to announce."""
    from storage.locking import file_lock

    path, holder = held_lock
    calls: list[None] = []
    locked = pytest.raises(VersionLocked, match=rf"test is locked by .*\"pid\": {holder.pid}")
    with locked, file_lock(str(path), what="test", timeout_s=timeout_s,
                           on_wait=lambda: calls.append(None)):
        pytest.fail("the body ran without the lock")
    assert len(calls) == expected_calls


READER = r'''
import hashlib, pickle, sys
version = pickle.loads(sys.stdin.buffer.read())
for sample_id in version.sample_ids:
    labels = version.read(sample_id)
    print(sample_id, labels.shape, hashlib.sha256(labels.blended_alpha.tobytes()
          + labels.blended_boundary.tobytes() + labels.teacher_alpha.tobytes()).hexdigest())
'''


def _digest_lines(version):
    lines = []
    for sample_id in version.sample_ids:
        labels = version.read(sample_id)
        data = labels.blended_alpha.tobytes() + labels.blended_boundary.tobytes()
        digest = hashlib.sha256(data + labels.teacher_alpha.tobytes()).hexdigest()
        lines.append(f"{sample_id} {labels.shape} {digest}")
    return lines


def _read_in_child(version, queue):
    queue.put(_digest_lines(version))


def test_a_pickled_version_reads_in_other_processes(tmp_path):
    store = LabelStore(tmp_path)
    draft = _draft(store, _manifest(9))
    _write_all(draft)
    version = draft.publish()
    expected = _digest_lines(version)  # the parent has opened arrays: children must reopen
    payload = pickle.dumps(version)
    assert len(payload) < 500  # names only, no arrays or open stores
    spawned = subprocess.run([sys.executable, "-c", READER], input=payload, env=_env(),
                             capture_output=True, timeout=60)
    assert spawned.returncode == 0, spawned.stderr.decode()
    assert spawned.stdout.decode().splitlines() == expected
    # DataLoader workers on Linux are forked from a parent that already read.
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(version, queue))
    child.start()
    assert queue.get(timeout=60) == expected
    child.join(timeout=60)
    assert child.exitcode == 0


def test_a_draft_pickles_for_workers(tmp_path):
    store = LabelStore(tmp_path)
    draft = _draft(store, _manifest(6))
    clone = pickle.loads(pickle.dumps(draft))
    assert clone.version_id == draft.version_id and clone.manifest == draft.manifest
    _write_all(clone)
    assert draft.pending_shards() == [] and draft.publish().version_id == draft.version_id
    with pytest.raises(VersionNotFound, match="open_draft first"):
        store.draft("v-0000000000000000")
