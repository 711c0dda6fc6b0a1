"""The offline MLB step end to end: real teacher checkpoints, real files, real zarr stores,
real ``mlb relabel`` processes (killed with SIGKILL, or racing each other)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from relabel_corpus import (
    cli_arguments,
    make_corpus,
    make_request,
    make_teacher,
    start_cli,
    store_files,
)

from mlb.blend import BlendConfig
from mlb.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from mlb.data.corpus import BadSample
from mlb.data.imageio import image_size, read_mask
from mlb.labels.relabel import prepare_relabel, publish_relabel, relabel, relabel_shards
from mlb.labels.request import RelabelConfig
from storage import LabelStore

CORPUS_SIZE = 22  # shard_size 4 -> 6 shards, the last one partial


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("relabel")
    images, masks = make_corpus(root / "corpus", CORPUS_SIZE)
    teacher = make_teacher(root / "teacher.pt", seed=0)
    return {"root": root, "images": images, "masks": masks, "teacher": teacher}


@pytest.fixture(scope="module")
def reference(corpus) -> dict:
    """One uninterrupted in-process run: the bytes every other run must reproduce."""
    store = corpus["root"] / "reference-store"
    request = make_request(corpus["teacher"], corpus["images"], corpus["masks"], store,
                           store_teacher_alpha=True)
    summary = relabel(request, progress=False)
    return {"request": request, "summary": summary, "store": store,
            "files": store_files(store)}


def test_version_id_names_the_inputs(corpus, tmp_path):
    request = make_request(corpus["teacher"], corpus["images"], corpus["masks"], tmp_path / "s")
    first = prepare_relabel(request)
    assert prepare_relabel(request).version_id == first.version_id
    assert first.shard_count == 6 and first.pending_shards == list(range(6))
    assert first.samples == CORPUS_SIZE and not first.already_published

    other_teacher = make_teacher(tmp_path / "other.pt", seed=1)
    changed = [
        request.model_copy(update={"teacher": str(other_teacher)}),
        request.model_copy(update={"config": request.config.model_copy(
            update={"blend": BlendConfig(mode="hard")})}),
        request.model_copy(update={"config": request.config.model_copy(
            update={"inference": request.config.inference.model_copy(
                update={"short_side": 48})})}),
    ]  # weights="ema" gives yet another id: test_ema_weights_relabel_with_the_ema_copy
    ids = [first.version_id] + [prepare_relabel(r).version_id for r in changed]
    assert len(set(ids)) == len(ids)


def test_relabel_writes_blended_labels_at_original_size(corpus, reference):
    summary = reference["summary"]
    assert summary.counts == {"samples": CORPUS_SIZE, "labelled": CORPUS_SIZE,
                              "quarantined": 0, "scan_quarantined": 0}
    assert summary.written_shards == 6 and summary.resumed_shards == 0
    version = LabelStore(reference["store"]).open_version("latest")
    assert version.version_id == summary.version_id
    assert version.metadata["teacher"]["sha256"] and version.metadata["blend"]["mode"] == "soft"
    for sample_id in version.sample_ids:
        labels = version.read(sample_id)
        entry = version.entry(sample_id)
        assert labels.shape == image_size(entry.image_path)
        # MLB (method.md section 1): blended = b * teacher + (1 - b) * mask, b stored as the
        # blended boundary; all three stored as uint8, so allow the quantisation error.
        b = labels.blended_boundary / 255.0
        expected = b * labels.teacher_alpha / 255.0 + (1 - b) * read_mask(
            entry.mask_path, size=labels.shape)
        assert np.abs(expected - labels.blended_alpha / 255.0).max() <= 1.5 / 255
    assert LabelStore(reference["store"]).verify(summary.version_id).ok


def test_rerun_of_a_published_version_does_nothing(reference):
    again = relabel(reference["request"], progress=False)
    assert again.already_published and again.version_id == reference["summary"].version_id
    assert store_files(reference["store"]) == reference["files"]


def test_shards_written_separately_equal_one_run(reference, tmp_path):
    # The flows' path: prepare, shards in any order and split, publish.
    request = reference["request"].model_copy(update={"store": str(tmp_path / "store")})
    plan = prepare_relabel(request)
    first = relabel_shards(request, version_id=plan.version_id, shards=[4, 1])
    assert first.shards_written == [4, 1] and first.labelled == 8
    rest = relabel_shards(request, version_id=plan.version_id, shards=range(6))
    assert rest.shards_skipped == [1, 4] and rest.shards_written == [0, 2, 3, 5]
    summary = publish_relabel(request, version_id=plan.version_id)
    assert summary.version_id == reference["summary"].version_id
    assert store_files(tmp_path / "store") == reference["files"]


def test_relabel_shards_refuses_other_settings(reference, tmp_path):
    request = reference["request"].model_copy(update={"store": str(tmp_path / "store")})
    plan = prepare_relabel(request)
    other = request.model_copy(update={"config": request.config.model_copy(
        update={"inference": request.config.inference.model_copy(update={"batch_size": 2})})})
    with pytest.raises(ValueError, match="settings differ"):
        relabel_shards(other, version_id=plan.version_id, shards=[0])


def test_killed_run_resumes_to_identical_bytes(corpus, reference, tmp_path):
    store = tmp_path / "store"
    request = reference["request"].model_copy(update={"store": str(store)})
    process = start_cli([*cli_arguments(request), "--store-teacher-alpha"])
    version_id = reference["summary"].version_id
    commits = store / "versions" / version_id / "commits"
    deadline = time.monotonic() + 120
    while not any(commits.glob("*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no shard was committed within 120 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    committed = sorted(commits.glob("*.json"))
    assert 1 <= len(committed) < 6
    assert not (store / "versions" / version_id / "version.json").exists()

    summary = relabel(request, progress=False)
    assert summary.version_id == version_id
    assert summary.resumed_shards == len(committed)
    assert summary.written_shards == 6 - len(committed)
    assert store_files(store) == reference["files"]


def test_concurrent_runs_publish_one_identical_version(reference, tmp_path):
    store = tmp_path / "store"
    request = reference["request"].model_copy(update={"store": str(store)})
    arguments = [*cli_arguments(request), "--store-teacher-alpha", "--json"]
    processes = [start_cli(arguments) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    assert {s["version_id"] for s in summaries} == {reference["summary"].version_id}
    assert LabelStore(store).verify("latest").ok
    assert [v.version_id for v in LabelStore(store).versions()] == [summaries[0]["version_id"]]
    assert store_files(store) == reference["files"]


def _bad_corpus(root: Path, *, unpaired: bool) -> tuple[Path, Path]:
    images, masks = make_corpus(root, 12)
    # p005: a JPEG cut in half (header fine, pixels truncated); p006: not an image at all.
    data = (images / "p005.jpg").read_bytes()
    (images / "p005.jpg").write_bytes(data[: len(data) // 2])
    (images / "p006.jpg").write_bytes(b"this is not a jpeg")
    if unpaired:
        shutil.copy(images / "p000.jpg", images / "lonely.jpg")
    return images, masks


def test_skip_bad_quarantines_with_reasons(corpus, tmp_path):
    images, masks = _bad_corpus(tmp_path / "corpus", unpaired=True)
    request = make_request(corpus["teacher"], images, masks, tmp_path / "store", skip_bad=True)
    summary = relabel(request, progress=False)
    assert summary.counts == {"samples": 12, "labelled": 10, "quarantined": 2,
                              "scan_quarantined": 1}
    reasons = {q.sample_id: (q.stage, q.reason) for q in summary.quarantined}
    assert reasons["lonely"][0] == "scan" and "no mask" in reasons["lonely"][1]
    assert reasons["p005"][0] == "shard" and "p005.jpg" in reasons["p005"][1]
    assert reasons["p006"][0] == "shard" and "p006.jpg" in reasons["p006"][1]
    version = LabelStore(tmp_path / "store").open_version(summary.version_id)
    assert set(version.quarantined) == {"p005", "p006"} and len(version) == 10
    assert LabelStore(tmp_path / "store").verify(summary.version_id).ok


@pytest.mark.parametrize("bad", ["p006", "p005"])  # found when planning / when decoding
def test_bad_file_without_skip_bad_names_it_and_writes_nothing_of_its_shard(corpus, tmp_path,
                                                                             bad):
    images, masks = _bad_corpus(tmp_path / "corpus", unpaired=False)
    # Only ``bad`` stays bad: the other one is replaced by a readable image of its size.
    other, same_size = ("p005", "p011") if bad == "p006" else ("p006", "p000")
    shutil.copy(images / f"{same_size}.jpg", images / f"{other}.jpg")
    request = make_request(corpus["teacher"], images, masks, tmp_path / "store")
    plan = prepare_relabel(request)
    with pytest.raises(BadSample, match=rf"{bad}\.jpg"):
        relabel(request, progress=False)
    shard = int(bad[1:]) // request.config.shard_size
    version = tmp_path / "store" / "versions" / plan.version_id
    assert not (version / "commits" / f"{shard:05d}.json").exists()
    assert not (version / "shards" / f"{shard:05d}").exists()
    assert (version / "commits" / "00000.json").exists()  # the shard before it was kept


def test_unpaired_file_without_skip_bad_fails_at_scan(corpus, tmp_path):
    images, masks = make_corpus(tmp_path / "corpus", 3)
    (masks / "p001.png").unlink()
    request = make_request(corpus["teacher"], images, masks, tmp_path / "store")
    with pytest.raises(BadSample, match=r"p001\.jpg"):
        prepare_relabel(request)


def test_changed_file_after_prepare_is_refused(corpus, tmp_path):
    images, masks = make_corpus(tmp_path / "corpus", 4)
    request = make_request(corpus["teacher"], images, masks, tmp_path / "store")
    plan = prepare_relabel(request)
    shutil.copy(images / "p001.jpg", images / "p000.jpg")
    with pytest.raises(ValueError, match=r"p000\.jpg.*changed"):
        relabel_shards(request, version_id=plan.version_id, shards=[0])


def test_memory_store(corpus, tmp_path):
    images, masks = make_corpus(tmp_path / "corpus", 5)
    request = make_request(corpus["teacher"], images, masks, "memory://relabel-test-store")
    summary = relabel(request, progress=False)
    version = LabelStore("memory://relabel-test-store").open_version(summary.version_id)
    assert len(version) == 5
    assert version.read("p004").shape == image_size(images / "p004.jpg")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="device"):
        RelabelConfig(device="gpu0")
    with pytest.raises(ValueError):
        RelabelConfig(batch_size=0)
    with pytest.raises(ValueError):
        RelabelConfig(unknown=1)


def test_human_seg_290_relabels_at_original_sizes(human_seg_290, corpus, tmp_path):
    request = make_request(corpus["teacher"], human_seg_290 / "Training_Images",
                           human_seg_290 / "Ground_Truth", tmp_path / "store",
                           batch_size=16, shard_size=64)
    summary = relabel(request, progress=False)
    assert summary.counts["labelled"] + summary.counts["quarantined"] == summary.counts["samples"]
    assert summary.counts["labelled"] >= 280
    version = LabelStore(tmp_path / "store").open_version(summary.version_id)
    for sample_id in version.sample_ids:
        labels = version.read(sample_id)
        assert labels.shape == image_size(version.entry(sample_id).image_path)


def test_ema_weights_relabel_with_the_ema_copy(corpus, tmp_path):
    images, masks = make_corpus(tmp_path / "corpus", 3)
    plain = read_checkpoint(corpus["teacher"])
    ema_state = read_checkpoint(make_teacher(tmp_path / "ema-source.pt", seed=5)).state_dict
    teacher = save_checkpoint(replace(plain, ema_state_dict=ema_state), tmp_path / "t.pt")
    request = make_request(teacher, images, masks, tmp_path / "store")
    from_model = relabel(request, progress=False)
    from_ema = relabel(request.model_copy(update={"weights": "ema", "ema_round": 2}),
                       progress=False)
    assert from_model.version_id != from_ema.version_id
    store = LabelStore(tmp_path / "store")
    ema_version = store.open_version(from_ema.version_id)
    assert ema_version.metadata["teacher"]["weights"] == "ema"
    assert ema_version.metadata["lineage"]["ema_round"] == 2
    model_labels = store.open_version(from_model.version_id).read("p000").blended_boundary
    assert not np.array_equal(ema_version.read("p000").blended_boundary, model_labels)

    no_ema = make_request(corpus["teacher"], images, masks, tmp_path / "store2")
    with pytest.raises(CheckpointError, match="no EMA weights"):
        relabel(no_ema.model_copy(update={"weights": "ema"}), progress=False)
    assert LabelStore(tmp_path / "store2").versions() == []  # refused before any draft
