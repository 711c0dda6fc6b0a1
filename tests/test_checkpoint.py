"""Checkpoints: round trip, refusal of files that would run code, damage, wrong architecture."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import pytest
import torch
from tiny_data import MODEL, TINY_TRAIN_FLAGS, write_tiny_corpus, write_untrained_checkpoint

from mlb.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_model,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from mlb.cli import main
from mlb.models import ModelConfig, build_model, build_model_from_config


class RunsShell:
    """Unpickling this would run ``touch MARKER`` (the classic reduce payload)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Custom:
    value: int = 1


def _full_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    config = ModelConfig(name=MODEL)
    model = build_model_from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 32, 32)).alpha.mean().backward()
    optimizer.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Checkpoint(
        model_config=config, state_dict=state, kind="student",
        ema_state_dict={k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()},
        optimizer_state=optimizer.state_dict(), step=7,
        train_config={"request": {"labels": "v-0123", "train": {"steps": 9, "lr": None}}},
        label_version="v-0123", metrics={"final_loss": 0.25},
        history={"step": [1.0, 2.0], "total": [0.5, 0.25]},
    )


def test_bytes_do_not_depend_on_the_writing_process(tmp_path):
    # torch.save names its archive after the file it writes: the partial file keeps the
    # previous release's name, so a teacher saved by any process hashes the same.
    import zipfile

    path = save_checkpoint(_full_checkpoint(), tmp_path / "c.pt")
    assert {name.split("/")[0] for name in zipfile.ZipFile(path).namelist()} == {"c.pt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no partial left behind


def test_round_trip_keeps_every_field(tmp_path):
    original = _full_checkpoint()
    path = save_checkpoint(original, tmp_path / "sub" / "c.pt")
    assert not (tmp_path / "sub" / "c.pt.partial").exists()
    loaded = read_checkpoint(path)
    for name in ("model_config", "kind", "step", "train_config", "label_version", "metrics",
                 "history"):
        assert getattr(loaded, name) == getattr(original, name), name
    for name in ("state_dict", "ema_state_dict"):
        first, second = getattr(original, name), getattr(loaded, name)
        assert all(torch.equal(first[key], second[key]) for key in first)
    # The optimiser state restores into a fresh optimiser of the same network.
    model = build_model_from_config(loaded.model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded.optimizer_state)
    assert optimizer.state_dict()["state"][0]["step"] == 1
    ema_model, _ = load_model(path, weights="ema")
    assert torch.equal(ema_model.state_dict()["alpha_head.bias"],
                       original.ema_state_dict["alpha_head.bias"])


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_checkpoint_that_would_run_code_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    payload = {"format": "mlb-checkpoint/1", "state_dict": RunsShell(str(marker))}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)
    with pytest.raises(CheckpointError, match=r"evil\.pt is refused: it is not a safe "
                       r"checkpoint \(it holds (posix|os)\.system"):
        read_checkpoint(path)
    assert not marker.exists()
    # Every entry point reads through read_checkpoint: the CLI refuses it the same way.
    assert main(["export", "--model", str(path), "--out", str(tmp_path / "x.onnx")]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("content", ["code", "text", "empty"])
def test_a_bad_encoder_weights_file_is_one_line_and_never_runs(tmp_path, capsys, content):
    """``--pretrained-encoder FILE`` reads the file as safely as a checkpoint."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "weights.pth"
    if content == "code":
        torch.save({"conv1.weight": RunsShell(str(marker))}, path)
    else:
        path.write_bytes(b"hello" if content == "text" else b"")
    matte = write_tiny_corpus(tmp_path / "data", count=2).matte
    for model in ("unet_r18", "modnet"):
        capsys.readouterr()
        assert main(["train", "teacher", "--matte", str(matte), "--model", model,
                     "--pretrained-encoder", str(path), "--steps", "1",
                     "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "weights_only" not in err and str(path) in err, err
        expected = "is refused: it is not a safe" if content == "code" else "is damaged or not"
        assert expected in err, err
    assert not marker.exists()


def test_a_custom_class_instance_is_refused(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"format": "mlb-checkpoint/1", "metrics": Custom()}, path)
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        read_checkpoint(path)


def test_a_damaged_file_is_a_clear_error(tmp_path, capsys):
    path = write_untrained_checkpoint(tmp_path / "good.pt")
    data = path.read_bytes()
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"damaged\.pt is damaged"):
        read_checkpoint(damaged)
    code = main(["evaluate", "--model", str(damaged), "--images", str(tmp_path),
                 "--alphas", str(tmp_path)])
    assert code == 2
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt"):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_model(MODEL).state_dict(), path)
    with pytest.raises(CheckpointError, match="not an mlb-checkpoint/1 file"):
        read_checkpoint(path)


def test_init_from_another_architecture_is_a_clear_error(tmp_path, capsys):
    init = write_untrained_checkpoint(tmp_path / "half.pt")
    images = tmp_path / "unused"
    code = main(["train", "ddc", "--images", str(images), "--masks", str(images),
                 "--init", str(init), "--steps", "1", "--out", str(tmp_path / "x.pt"),
                 *TINY_TRAIN_FLAGS, "--model", "unet_r18"])  # the last --model wins
    assert code == 2
    error = capsys.readouterr().err
    assert "half.pt holds a unet_r18_w05 network, but unet_r18 was asked for" in error
    assert not (tmp_path / "x.pt").exists()


def test_weights_that_do_not_fit_the_named_network_are_refused(tmp_path):
    init = write_untrained_checkpoint(tmp_path / "half.pt")
    other = ModelConfig(name=MODEL, options={"aspp_rates": (1, 6)})
    with pytest.raises(CheckpointError, match="do not fit unet_r18_w05"):
        load_weights(build_model_from_config(other), init, model_config=other)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_model(init, weights="ema")


def test_loading_does_not_need_the_pretrained_encoder_file_any_more(tmp_path):
    # The config remembers where the encoder's initial weights came from; the checkpoint's
    # full state_dict supersedes them, so a moved or deleted file must not break loading.
    encoder_file = tmp_path / "resnet18.pth"
    torch.save(build_model("unet_r18").encoder.state_dict(), encoder_file)
    config = ModelConfig(name="unet_r18", options={"pretrained_encoder": str(encoder_file)})
    model = build_model_from_config(config)
    path = save_checkpoint(Checkpoint(model_config=config, state_dict=model.state_dict()),
                           tmp_path / "model.pt")
    encoder_file.unlink()
    loaded, checkpoint = load_model(path)
    assert checkpoint.model_config.options.pretrained_encoder == str(encoder_file)
    assert torch.equal(loaded.state_dict()["encoder.conv1.weight"],
                       model.state_dict()["encoder.conv1.weight"])
