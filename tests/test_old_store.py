"""A store written by the previous release (commit 875c222, ``tests/fixtures/old_store``) still
opens, verifies, resumes its draft and trains a student; version ids and stored bytes do not
change. The fixture was made once by ``tests/fixtures/make_old_store.py``; it is never rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from relabel_corpus import make_request, make_teacher, store_files
from tiny_data import MODEL

from mlb.labels.relabel import prepare_relabel, relabel
from mlb.train import StudentRequest, TrainConfig, train_student
from storage import LabelStore

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "old_store"
IDS = json.loads((FIXTURE / "ids.json").read_text())


@pytest.fixture()
def old(tmp_path) -> dict:
    """A copy of the fixture (tests never touch the committed one) and the recreated teacher."""
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    # Same seed and same file name: torch.save names its archive after the file.
    teacher = make_teacher(tmp_path / "teacher" / "teacher.pt", seed=0)
    return {"root": root, "store": root / "store", "teacher": teacher,
            "images": root / "corpus" / "images", "masks": root / "corpus" / "masks"}


def _request(old: dict, store: Path, **settings: object):
    return make_request(old["teacher"], old["images"], old["masks"], store, **settings)


def test_the_recreated_teacher_is_the_one_the_fixture_was_made_with(old):
    recorded = LabelStore(old["store"]).open_version(IDS["published"]).metadata["teacher"]
    from mlb.labels.teacher import teacher_sha256
    assert teacher_sha256(old["teacher"]) == recorded["sha256"]


def test_old_published_version_keeps_its_id_and_bytes(old):
    before = store_files(old["store"])
    store = LabelStore(old["store"])
    assert store.latest() == IDS["published"]
    infos = {info.version_id: info for info in store.versions()}
    assert set(infos) == {IDS["published"], IDS["draft"]}
    report = store.verify(IDS["published"])
    assert report.ok and report.published and report.checked_shards == 3
    # The new code computes the same id from the same inputs and finds it published.
    plan = prepare_relabel(_request(old, old["store"], shard_size=2, batch_size=2,
                                    store_teacher_alpha=True))
    assert plan.version_id == IDS["published"] and plan.already_published
    version = store.open_version(IDS["published"])
    assert len(version.read_all()) == 6 and version.has_teacher_alpha
    assert store_files(old["store"]) == before  # opening, verifying, planning wrote nothing


def test_old_draft_resumes_to_the_bytes_a_fresh_run_writes(old, tmp_path):
    settings = {"short_side": IDS["draft_settings"]["short_side"], "shard_size": 2,
                "batch_size": 2}
    store = LabelStore(old["store"])
    draft_report = store.verify(IDS["draft"])
    assert draft_report.ok and not draft_report.published
    assert draft_report.pending_shards == [1, 2]
    old_shard0 = {k: v for k, v in store_files(old["store"]).items()
                  if k.startswith(f"versions/{IDS['draft']}/shards/00000/") and "/c/" in k}
    assert old_shard0

    summary = relabel(_request(old, old["store"], **settings), progress=False)
    assert summary.version_id == IDS["draft"]
    assert (summary.resumed_shards, summary.written_shards) == (1, 2)
    assert store.verify(IDS["draft"]).ok

    fresh = relabel(_request(old, tmp_path / "fresh", **settings), progress=False)
    assert fresh.version_id == IDS["draft"]
    prefix = f"versions/{IDS['draft']}/"
    resumed = {k: v for k, v in store_files(old["store"]).items() if k.startswith(prefix)}
    written = {k: v for k, v in store_files(tmp_path / "fresh").items() if k.startswith(prefix)}
    # Metadata and manifest name the corpus folders, which differ between the two stores, and
    # a shard's group zarr.json is consolidated or not depending on the run that wrote it; the
    # label chunks and commit markers (which hold the shard checksums) are the same bytes.
    labels = {k for k in written if "/c/" in k or "/commits/" in k}
    assert labels and {k: resumed[k] for k in labels} == {k: written[k] for k in labels}
    assert {k: resumed[k] for k in old_shard0} == old_shard0  # the old chunks were kept


def test_a_student_trains_a_step_from_the_old_version(old, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "student.pt"
    summary = train_student(StudentRequest(
        store=str(old["store"]), labels=IDS["published"], model=MODEL, out=str(out),
        train=TrainConfig(steps=1, batch_size=2, lr=1e-3, warmup_steps=1, device="cpu")),
        progress=False)
    assert summary.steps == 1 and out.is_file()


def test_typed_metadata_reads_and_writes_the_old_bytes(old):
    from mlb.checkpoint import read_checkpoint
    from mlb.labels.metadata import LabelVersionMetadata
    from mlb.labels.relabel import _metadata  # what prepare_relabel stores
    from mlb.labels.request import QuarantinedSample

    for version_id in (IDS["published"], IDS["draft"]):
        stored = json.loads((old["store"] / "versions" / version_id / "draft.json").read_text())
        metadata = LabelVersionMetadata.parse(stored["metadata"])
        assert metadata.to_stored() == stored["metadata"]
        assert metadata.teacher.model_name == MODEL and metadata.lineage.ema_round == 0
    # Rebuilt from the same request, the metadata is the same JSON the old release wrote,
    # but for the corpus and teacher paths (the copy lives elsewhere).
    request = _request(old, old["store"], shard_size=2, batch_size=2, store_teacher_alpha=True)
    scan = [QuarantinedSample(sample_id="x", reason="no mask", stage="scan", path="/x.jpg")]
    rebuilt = _metadata(request, read_checkpoint(old["teacher"]), stored["metadata"]["teacher"][
        "sha256"], scan)
    published = json.loads((old["store"] / "versions" / IDS["published"] / "draft.json"
                            ).read_text())["metadata"]
    for section in ("lineage", "blend", "inference", "producer"):
        assert rebuilt[section] == published[section]
    assert {k: v for k, v in rebuilt["teacher"].items() if k != "path"} == {
        k: v for k, v in published["teacher"].items() if k != "path"}
    assert rebuilt["corpus"]["scan_quarantine"] == [
        {"sample_id": "x", "reason": "no mask", "stage": "scan", "path": "/x.jpg"}]
    assert LabelVersionMetadata.parse({}).lineage.ema_round == 0  # other producers' versions
