"""Lineage both ways, progress lines without a terminal, and ``--threads``, through the real
``mlb`` entry point.

- a student's checkpoint carries the absolute store URI, the label version and the sha256 of
  its init checkpoint and of the teacher; ``mlb checkpoint show`` prints them (``--json``
  too); old checkpoints without them still show; a bad or malicious file is one error line;
- ``mlb labels show V`` lists the checkpoints trained on V, recorded when each training
  starts: two trainings started at the same time in two processes both appear; the records
  change neither the version's files nor its id, and ``mlb labels verify`` neither fails on
  them nor lets them hide damage;
- ``mlb train`` with stderr on a pipe prints a line every ``--log-every`` steps;
- every command that runs a network takes ``--threads``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from relabel_corpus import make_corpus, make_request, make_teacher, start_cli, store_files
from tiny_data import MODEL, TINY_TRAIN_FLAGS

from mlb.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from mlb.cli import build_parser, main
from mlb.labels.relabel import relabel
from mlb.labels.teacher import teacher_sha256
from mlb.models import ModelConfig, build_model
from storage import LabelStore, file_sha256

STUDENT_FLAGS = [*TINY_TRAIN_FLAGS, "--steps", "2", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lineage")
    images, masks = make_corpus(root / "corpus", 4)
    teacher = make_teacher(root / "teacher.pt")
    store = root / "labels"
    version = relabel(make_request(teacher, images, masks, store, short_side=48,
                                   shard_size=2, batch_size=2), progress=False).version_id
    return {"root": root, "teacher": teacher, "store": store, "version": version}


def _one_error(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"mlb {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _version_files(store: Path, version: str) -> dict[str, bytes]:
    return {name: data for name, data in store_files(store).items()
            if name.startswith(f"versions/{version}/") and "/trainings/" not in name}


def test_concurrent_trainings_are_all_listed_and_change_nothing_of_the_version(
        labelled, tmp_path, capsys):
    store, version, teacher = labelled["store"], labelled["version"], labelled["teacher"]
    before = _version_files(store, version)
    outs = [tmp_path / f"student-{index}.pt" for index in range(2)]
    # Two processes started together, both recording beside the same version.
    processes = [start_cli(["train", "student", "--store", str(store), "--labels", version,
                            "--init", str(teacher), "--out", str(out), *STUDENT_FLAGS])
                 for out in outs]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    capsys.readouterr()
    assert main(["labels", "show", version, "--store", str(store)]) == 0
    shown = json.loads(capsys.readouterr().out)
    trained = {record["checkpoint"]: record for record in shown["trained_checkpoints"]}
    assert {str(out) for out in outs} <= set(trained)
    for record in (trained[str(out)] for out in outs):
        assert record["exists"] and record["kind"] == "student" and record["model"] == MODEL
        assert record["teacher_sha256"] == teacher_sha256(teacher)
        assert record["init_sha256"] == file_sha256(teacher)
    # Records are beside the version, not in it: its files and id are unchanged and verify
    # passes, naming the records as lineage only.
    assert _version_files(store, version) == before
    assert main(["labels", "verify", version, "--store", str(store), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert f"{version}: ok" in line and "2 training record(s)" in line


def test_a_refused_training_records_nothing(labelled, tmp_path, capsys):
    # A second version of the corpus (another inference size), and a checkpoint of the first.
    store, teacher = labelled["store"], labelled["teacher"]
    out = tmp_path / "student.pt"
    assert main(["train", "student", "--store", str(store), "--labels", labelled["version"],
                 "--out", str(out), *STUDENT_FLAGS]) == 0
    root = labelled["root"]
    other = relabel(make_request(teacher, root / "corpus" / "images", root / "corpus" / "masks",
                                 store, short_side=40, shard_size=2, batch_size=2),
                    progress=False).version_id
    capsys.readouterr()
    # Without --overwrite the run is refused: the second version must not claim the file.
    assert main(["train", "student", "--store", str(store), "--labels", other,
                 "--out", str(out), *STUDENT_FLAGS]) == 2
    assert "exists" in _one_error(capsys.readouterr().err, "train")
    assert LabelStore(store).training_records(other) == ([], [])
    assert main(["train", "student", "--store", str(store), "--labels", other,
                 "--out", str(out), *STUDENT_FLAGS, "--overwrite"]) == 0
    (record,), _ = LabelStore(store).training_records(other)
    assert record["checkpoint"] == str(out)


def test_records_cannot_hide_damage_or_pass_as_another_versions(labelled, tmp_path, capsys):
    import shutil

    store = tmp_path / "labels"
    shutil.copytree(labelled["store"], store)
    version = labelled["version"]
    trainings = store / "versions" / version / "trainings"
    trainings.mkdir(exist_ok=True)
    (trainings / "forged.json").write_text(json.dumps({"label_version": "v-0000000000000000",
                                                       "checkpoint": "/x.pt"}))
    (trainings / "broken.json").write_text("{not json")
    os.mkfifo(trainings / "pipe.json")
    capsys.readouterr()
    # A FIFO would block a reader: verify names it as damage before reading anything.
    assert main(["labels", "verify", version, "--store", str(store), "--quiet"]) == 1
    assert "pipe.json" in capsys.readouterr().err
    (trainings / "pipe.json").unlink()
    assert main(["labels", "verify", version, "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "forged.json" in out and "broken.json" in out  # named, and ignored
    assert main(["labels", "show", version, "--store", str(store)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert all(r["checkpoint"] != "/x.pt" for r in shown["trained_checkpoints"])
    assert len(shown["training_record_problems"]) == 2
    # Damage in the version is found whatever the records say.
    chunk = next((store / "versions" / version / "shards").rglob("c/0"))
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert main(["labels", "verify", version, "--store", str(store), "--quiet"]) == 1


def test_checkpoint_show_prints_lineage_both_ways(labelled, tmp_path, capsys):
    store, teacher = labelled["store"], labelled["teacher"]
    out = tmp_path / "student.pt"
    relative_store = os.path.relpath(store)
    assert main(["train", "student", "--store", relative_store, "--labels", "latest",
                 "--init", str(teacher), "--out", str(out), *STUDENT_FLAGS]) == 0
    capsys.readouterr()
    assert main(["checkpoint", "show", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["store"] == str(store) and info["store_is_absolute"]
    assert info["label_version"] == LabelStore(store).latest() and info["kind"] == "student"
    assert info["network"]["name"] == MODEL and info["steps"] == info["planned_steps"] == 2
    assert info["init"] == {"path": str(teacher), "sha256": file_sha256(teacher)}
    assert info["teacher"]["sha256"] == teacher_sha256(teacher)
    assert info["sha256"] == file_sha256(out) and "final_loss" in info["metrics"]
    assert main(["checkpoint", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"label version: {info['label_version']}" in text
    assert f"store:         {store}" in text
    assert file_sha256(teacher) in text


def test_old_checkpoints_without_lineage_still_load_and_show(labelled, capsys):
    # The teacher fixture is written as the previous release wrote checkpoints: no lineage key.
    payload = torch.load(labelled["teacher"], weights_only=True)
    assert "lineage" not in payload and read_checkpoint(labelled["teacher"]).lineage == {}
    assert main(["checkpoint", "show", str(labelled["teacher"])]) == 0
    text = capsys.readouterr().out
    assert "init:          not recorded" in text and "label version: -" in text


def _torch_save(value: object, path: Path) -> Path:
    torch.save(value, path)
    return path


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/mlb-pwned",))


@pytest.mark.parametrize("bad", ["text", "malicious", "wrong-types", "missing-part",
                                 "bad-lineage", "unknown-network", "missing"])
def test_a_bad_checkpoint_is_one_error_line(tmp_path, capsys, bad):
    path = tmp_path / "bad.pt"
    model = build_model(MODEL)
    good = Checkpoint(model_config=ModelConfig(name=MODEL), state_dict=model.state_dict())
    if bad == "text":
        path.write_text("not a checkpoint")
    elif bad == "malicious":
        with open(path, "wb") as handle:
            pickle.dump(_RunsCode(), handle)
    elif bad == "wrong-types":
        _torch_save({**good.to_payload(), "step": "many", "metrics": [1]}, path)
    elif bad == "missing-part":
        payload = good.to_payload()
        del payload["train_config"]
        _torch_save(payload, path)
    elif bad == "bad-lineage":
        _torch_save({**good.to_payload(), "lineage": {"init": "not a ref"}}, path)
    elif bad == "unknown-network":
        _torch_save({**good.to_payload(), "model_config": {"name": "no_such_network"}}, path)
    capsys.readouterr()
    assert main(["checkpoint", "show", str(path)]) == 2
    line = _one_error(capsys.readouterr().err, "checkpoint")
    assert str(path) in line
    assert "errors.pydantic.dev" not in line and "input_value" not in line, line
    if bad == "unknown-network":
        assert "ModelConfig.name: unknown model 'no_such_network'" in line, line
    assert not Path("/tmp/mlb-pwned").exists()


def test_training_prints_a_line_every_log_every_steps_on_a_pipe(labelled, tmp_path):
    # As docs/lineage.md shows it: stderr to a file, no terminal anywhere.
    out, log = tmp_path / "student.pt", tmp_path / "train.log"
    flags = [flag for flag in STUDENT_FLAGS if flag != "--quiet"]
    with open(log, "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "mlb", "train", "student", "--store", str(labelled["store"]),
             "--out", str(out), *flags, "--steps", "3", "--log-every", "1", "--threads", "1"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=600)
    assert done.returncode == 0, log.read_text()
    lines = [line for line in log.read_text().splitlines() if " step " in line]
    assert [line.split(":")[1].split()[-1] for line in lines] == ["1/3", "2/3", "3/3"], lines
    assert all(line.startswith("mlb train: student step ") and "loss" in line
               and "samples/s" in line for line in lines)
    quiet = subprocess.run(
        [sys.executable, "-m", "mlb", "train", "student", "--store", str(labelled["store"]),
         "--out", str(out), *STUDENT_FLAGS, "--log-every", "1", "--overwrite"],
        capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and " step " not in quiet.stderr, quiet.stderr


NETWORK_COMMANDS = [["train", "teacher"], ["train", "student"], ["train", "ddc"], ["relabel"],
                    ["evaluate"], ["predict"], ["export"], ["reproduce", "paper"],
                    ["reproduce", "domain-gap"], ["bench"]]


@pytest.mark.parametrize("command", NETWORK_COMMANDS, ids=" ".join)
def test_every_command_that_runs_a_network_takes_threads(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    assert "--threads N" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args([*command, "--threads", "0"])
    assert refused.value.code == 2
    assert "--threads: expected a positive integer, got '0'" in capsys.readouterr().err


def test_threads_reaches_torch_and_child_processes(labelled, tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    threads = torch.get_num_threads()
    try:
        assert main(["export", "--model", str(labelled["teacher"]), "--out",
                     str(tmp_path / "t.onnx"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(threads)


def test_checkpoint_show_prints_a_pretraining_total_and_only_options_that_apply(tmp_path,
                                                                               capsys):
    # A segmentation-only teacher's total is its pre-training steps, not the fine-tuning's;
    # MODNet shows no U-Net ASPP rates; a U-Net's own rates still show.
    request = {"pretrain_steps": 7, "train": {"steps": 400}}
    pretrain = tmp_path / "teacher.pretrain.pt"
    save_checkpoint(Checkpoint(model_config=ModelConfig(name="modnet"), kind="teacher-pretrain",
                               step=7, state_dict=build_model("modnet").state_dict(),
                               train_config={"request": request}), pretrain)
    assert main(["checkpoint", "show", str(pretrain)]) == 0
    text = capsys.readouterr().out
    assert "steps:         7 of 7\n" in text and "network:       modnet\n" in text, text
    rates = ModelConfig(name=MODEL, options={"aspp_rates": (1, 4)})
    unet = tmp_path / "unet.pt"
    save_checkpoint(Checkpoint(model_config=rates,
                               state_dict=build_model(MODEL, aspp_rates=(1, 4)).state_dict()), unet)
    assert main(["checkpoint", "show", str(unet)]) == 0
    assert f'network:       {MODEL} {{"aspp_rates": [1, 4]}}\n' in capsys.readouterr().out


def test_a_tampered_negative_step_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "negative.pt"
    good = Checkpoint(model_config=ModelConfig(name=MODEL),
                      state_dict=build_model(MODEL).state_dict())
    _torch_save({**good.to_payload(), "step": -5}, path)
    assert main(["checkpoint", "show", str(path)]) == 2
    line = _one_error(capsys.readouterr().err, "checkpoint")
    assert str(path) in line and "-5" in line, line
