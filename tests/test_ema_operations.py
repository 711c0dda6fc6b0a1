"""EMA rounds an operator can leave on a schedule, run as flows against a REAL Prefect server.

The same sequence a nightly ``ema-relabel`` goes through on a fresh checkout, each round a
real flow run (a fresh Python process with ``PREFECT_API_URL`` set, as ``serve`` starts one):

1. no student yet at ``request.student``: the run FAILS before any work with one message
   naming what to train first;
2. a student with an EMA copy is trained on the corpus's newest version (``mlb train
   student``): the next round BOOTSTRAPS from it, sets the corpus's promoted pointer, and is
   REJECTED, by construction: the validation truth is the current student's own prediction,
   so any change scores worse. ``latest`` moves to the round's labels, ``promoted`` does not;
3. the same round again: NOTHING NEW, a Completed state named ``NothingNew`` whose message
   says so, in a fraction of a round's time, writing nothing;
4. the validation truth is now the round's new student's prediction: the round is PROMOTED
   (relabel and training find their work done), the current student is replaced, the promoted
   pointer moves, and the server receives the ``mlb.student.promoted`` event with the
   version, corpus and absolute store URI.

The first tests need no server: the bootstrap's choice and messages, and old stores without a
promoted pointer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_prefect_server
from relabel_corpus import make_teacher, store_files
from test_prefect_server import TERMINAL, Server
from tiny_data import TINY_TRAIN_FLAGS, write_tiny_corpus

from mlb.cli import main
from mlb.data.augment import AugmentConfig
from mlb.labels.request import RelabelConfig
from mlb.train import TrainConfig
from mlb.train.ema_round import EmaRoundRequest, RoundError, bootstrap, plan_round
from storage import LabelStore

ROOT = Path(__file__).resolve().parents[1]
prefect_server = test_prefect_server.prefect_server  # the real server fixture, shared
RELABEL = RelabelConfig(shard_size=2,
                        inference={"short_side": 32, "batch_size": 2, "device": "cpu"})
SHORT_SIDE = 32

# One flow run in a fresh process, as a served deployment runs it; prints its final state.
RUN_ROUND = """
import json, sys
from flows.ema import ema_relabel
from flows.runners import DaskConfig
from mlb.train.ema_round import EmaRoundRequest

request = EmaRoundRequest.model_validate_json(sys.argv[1])
state = ema_relabel(request, dask=DaskConfig(workers=0), return_state=True)
print("FINAL " + json.dumps({"type": state.type.value, "name": state.name,
                             "message": state.message,
                             "flow_run_id": str(state.state_details.flow_run_id)}))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A tiny natural corpus relabelled once by a teacher; a validation set of 48 px images
    (one size: predictions do not depend on the batch's padding)."""
    root = tmp_path_factory.mktemp("ema-ops")
    tiny = write_tiny_corpus(root / "data")
    validation = root / "validation" / "images"
    validation.mkdir(parents=True)
    for image in sorted(tiny.images.iterdir())[:2]:
        shutil.copy(image, validation / image.name)
    teacher = make_teacher(root / "teacher.pt")
    store = root / "labels"
    # The first step on a new corpus, as docs/ema-rounds.md shows it.
    assert main(["relabel", "--teacher", str(teacher), "--images", str(tiny.images),
                 "--masks", str(tiny.masks), "--store", str(store), "--short-side", "32",
                 "--batch-size", "2", "--shard-size", "2", "--device", "cpu", "--quiet"]) == 0
    version = LabelStore(store).latest(corpus="images")
    return {"root": root, "images": tiny.images, "masks": tiny.masks, "store": store,
            "teacher": teacher, "version": version, "validation": validation}


def _request(data: dict, *, student: Path, alphas: Path, **changes) -> EmaRoundRequest:
    fields = dict(
        student=str(student), images=str(data["images"]), masks=str(data["masks"]),
        store=str(data["store"]), validation_images=str(data["validation"]),
        validation_alphas=str(alphas), work=str(data["root"] / "rounds"),
        train=TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup_steps=1, device="cpu",
                          checkpoint_every=0),
        relabel=RELABEL, augment=AugmentConfig(short_side=32, crop_sizes=(32,), output_size=32),
        inference={"short_side": SHORT_SIDE, "device": "cpu"})
    return EmaRoundRequest(**{**fields, **changes})


def _train_student(corpus: dict, out: Path, *extra: str) -> Path:
    assert main(["train", "student", "--store", str(corpus["store"]), "--labels", "latest",
                 "--init", str(corpus["teacher"]), "--out", str(out), *TINY_TRAIN_FLAGS,
                 "--lr", "1e-2", "--steps", "2", "--checkpoint-every", "0", *extra]) == 0
    return out


def _truth_from(model: Path, corpus: dict, out: Path) -> Path:
    """The validation truth made of ``model``'s own predictions (``mlb predict``, at the
    evaluation's short side): ``model`` scores about 0 on it, any other network worse."""
    assert main(["predict", "--model", str(model), "--images", str(corpus["validation"]),
                 "--out", str(out), "--short-side", str(SHORT_SIDE), "--batch-size", "4",
                 "--quiet"]) == 0
    return out


# --------------------------------------------------------------------------- no server


def test_bootstrap_says_what_to_train_first(corpus, tmp_path):
    # A corpus without any published version: relabel first.
    other = tmp_path / "other" / "images"
    shutil.copytree(corpus["images"], other)
    request = _request(corpus, student=tmp_path / "current.pt", alphas=tmp_path, corpus=None,
                       images=str(other))
    with pytest.raises(RoundError, match=r"corpus 'images' has no published|relabel it"):
        bootstrap(request.model_copy(update={"corpus": "nothing-here"}))
    # A version, but only a student without an EMA copy trained on it: train one with --ema.
    no_ema = _train_student(corpus, tmp_path / "no-ema.pt", "--no-ema")
    request = _request(corpus, student=tmp_path / "current.pt", alphas=tmp_path)
    with pytest.raises(RoundError) as refused:
        plan_round(request)
    message = str(refused.value)
    assert f"no finished student with an EMA copy was trained on {corpus['version']}" in message
    assert f"{no_ema} has no EMA copy" in message and "--ema" in message
    assert str(corpus["teacher"]) in message  # the --init to use
    assert not (tmp_path / "current.pt").exists()
    assert LabelStore(corpus["store"]).promoted("images") is None


def test_old_stores_have_no_promoted_pointer_and_still_verify(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "old_store"
    shutil.copytree(fixture, tmp_path / "old")
    store = LabelStore(tmp_path / "old" / "store")
    before = store_files(tmp_path / "old" / "store")
    published = json.loads((fixture / "ids.json").read_text())["published"]
    corpus = store.open_version(published).corpus
    assert store.promoted(corpus) is None and store.verify(published).ok
    store.move_promoted(published, corpus)
    assert store.promoted(corpus) == published and store.latest() == published
    after = store_files(tmp_path / "old" / "store")
    # One new file; every byte that was there is unchanged.
    assert set(after) - set(before) == {f"corpora/{corpus}/promoted.json"}
    assert {name: after[name] for name in before} == before
    with pytest.raises(ValueError, match="not 'other'"):
        store.move_promoted(published, "other")


# --------------------------------------------------------------------------- real server


def _run_round(server: Server, request: EmaRoundRequest) -> tuple[dict, dict, float]:
    """One ``ema-relabel`` flow run; its final state as printed and as the server has it."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", RUN_ROUND, request.model_dump_json()],
                          env={**server.env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("FINAL ")]
    assert lines, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    final = json.loads(lines[-1][len("FINAL "):])
    run = server.get(f"/flow_runs/{final['flow_run_id']}").json()
    assert run["state_type"] in TERMINAL, run
    return final, run, seconds


def _events(server: Server, name: str) -> list[dict]:
    page = server.post("/events/filter", {"filter": {"event": {"name": [name]}}, "limit": 50})
    return page["events"]


@pytest.fixture(scope="module")
def rounds(corpus) -> dict:
    """What the server tests hand on to each other (they run in order)."""
    return {"current": corpus["root"] / "checkpoints" / "current.pt"}


@pytest.mark.prefect_server
def test_a_round_without_any_student_fails_naming_what_to_train(prefect_server, corpus,
                                                                rounds, tmp_path):
    request = _request(corpus, student=rounds["current"], alphas=tmp_path)
    final, run, _ = _run_round(prefect_server, request)
    assert final["type"] == run["state_type"] == "FAILED", final
    assert "no finished student with an EMA copy was trained on" in run["state"]["message"]
    assert f"--labels {corpus['version']}" in run["state"]["message"]
    assert not rounds["current"].exists()


@pytest.mark.prefect_server
def test_bootstrap_then_a_rejected_round_leaves_the_promoted_pointer(prefect_server, corpus,
                                                                     rounds):
    student = _train_student(corpus, corpus["root"] / "runs" / "student-a.pt", "--ema")
    truth = _truth_from(student, corpus, corpus["root"] / "truth-a")
    request = _request(corpus, student=rounds["current"], alphas=truth)
    final, _, seconds = _run_round(prefect_server, request)
    assert final["type"] == "COMPLETED", (final, prefect_server.logs())
    store = LabelStore(corpus["store"])
    version = store.latest(corpus="images")
    assert version != corpus["version"]  # the round's labels are published as latest ...
    assert store.promoted("images") == corpus["version"]  # ... but never promoted
    assert rounds["current"].read_bytes() == student.read_bytes()  # bootstrapped, kept
    folder = corpus["root"] / "rounds" / version
    outcome = json.loads((folder / "round.json").read_text())["round"]
    assert outcome["outcome"] == "rejected" and outcome["bootstrapped_from"] == str(student)
    assert outcome["new_metric"] > outcome["current_metric"]
    assert not (folder / "previous-student.pt").exists()
    assert "bootstrapped" in (folder / "report.md").read_text()
    rounds.update(version=version, request=request, seconds=seconds, truth=truth,
                  student=student, new_student=Path(outcome["student"]))


@pytest.mark.prefect_server
def test_a_round_with_nothing_new_ends_quickly_saying_so(prefect_server, corpus, rounds):
    before = store_files(corpus["store"])
    rounds_before = sorted(p for p in (corpus["root"] / "rounds").rglob("*"))
    final, run, seconds = _run_round(prefect_server, rounds["request"])
    assert final["type"] == run["state_type"] == "COMPLETED"
    assert final["name"] == run["state_name"] == "NothingNew", final
    message = run["state"]["message"]
    assert message.startswith("nothing new to do") and rounds["version"] in message
    assert "rejected" in message
    assert store_files(corpus["store"]) == before  # nothing relabelled, recorded or moved
    assert sorted(p for p in (corpus["root"] / "rounds").rglob("*")) == rounds_before
    # No relabel, training or scoring ran: only the process start and the plan's corpus hash.
    tasks = prefect_server.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [
        final["flow_run_id"]]}}})
    assert [task["name"].split("-")[0] for task in tasks] == ["plan"], tasks
    assert seconds < rounds["seconds"], (seconds, rounds["seconds"])


@pytest.mark.prefect_server
def test_a_promotion_moves_the_pointer_and_emits_its_event(prefect_server, corpus, rounds,
                                                           capsys):
    truth = _truth_from(rounds["new_student"], corpus, corpus["root"] / "truth-b")
    request = rounds["request"].model_copy(update={"validation_alphas": str(truth)})
    final, _, _ = _run_round(prefect_server, request)
    assert final["type"] == "COMPLETED" and final["name"] == "Completed", final
    capsys.readouterr()
    store = LabelStore(corpus["store"])
    assert store.promoted("images") == rounds["version"]
    for version, promoted in ((rounds["version"], True), (corpus["version"], False)):
        assert main(["labels", "show", version, "--store", str(corpus["store"])]) == 0
        assert json.loads(capsys.readouterr().out)["promoted"] is promoted
    assert rounds["current"].read_bytes() == rounds["new_student"].read_bytes()
    backup = corpus["root"] / "rounds" / rounds["version"] / "previous-student.pt"
    assert backup.read_bytes() == rounds["student"].read_bytes()

    def promoted_event() -> dict | None:
        events = _events(prefect_server, "mlb.student.promoted")
        return next((event for event in events
                     if event["payload"]["version"] == rounds["version"]), None)

    event = prefect_server.wait_for("the promotion event", promoted_event, timeout_s=60)
    assert event["resource"]["prefect.resource.id"] == f"mlb.label-version.{rounds['version']}"
    assert event["payload"]["corpus"] == "images"
    assert event["payload"]["store"] == str(corpus["store"])  # absolute
    assert event["payload"]["store_uri"] == corpus["store"].as_uri()
    assert event["payload"]["new_metric"] <= event["payload"]["current_metric"]
