"""The trial commands of docs/science-notes.md, at the tiny preset's size."""

import json

import pytest

from mlb.cli import main as cli
from mlb.data.trimap import kernel_range_for
from mlb.ddc import window_for
from mlb.experiments.reproduce import ReproduceConfig
from mlb.experiments.science_trials import main


def _run(capsys, *args):
    main([*args])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_every_trial_runs_and_prints_scores(tmp_path, capsys):
    work = ["--preset", "tiny", "--work", str(tmp_path / "work"), "--steps", "2"]
    seg = _run(capsys, "seg", *work)
    assert set(seg["result"]["natural"]) >= {"mse", "mse_boundary"}
    teacher = _run(capsys, "teacher", *work, "--photographic")
    assert set(teacher["result"]) == {"natural", "composite"}
    assert (tmp_path / "work" / "trial" / "teacher-photographic-2.pt").is_file()
    ddc = _run(capsys, "ddc", *work, "--window", "3", "--kernels", "3", "4")
    assert ddc["result"]["natural"]["mse"] >= 0
    fixed = _run(capsys, "ddc", *work, "--known", "mse", "--weight", "3", "--lr", "3e-4")
    checkpoint = tmp_path / "work" / "trial" / "ddc-w11-k1-29-x3-2-mse-lr0.0003.pt"
    assert fixed["result"]["natural"]["mse"] >= 0 and checkpoint.is_file()
    trimaps = _run(capsys, "trimaps", *work)
    shares = trimaps["result"]
    assert float(shares["29"]["unknown"]) >= float(shares["1"]["unknown"])


@pytest.mark.parametrize("side, window, kernels", [
    (96, 3, (3, 4)), (256, 5, (3, 12)), (512, 11, (3, 23)), (640, 13, (3, 29))])
def test_ddc_settings_scale_with_the_image_side(side, window, kernels):
    # The reference: 11x11 at 512 px crops, kernels 1-29 px at 640 px (at least 3 for masks).
    assert window_for(side) == window
    assert kernel_range_for(side) == kernels


def test_the_cpu256_plan_is_the_sized_one(capsys):
    # The preset's sizing (docs/science-notes.md section 3) multiplies these step counts.
    assert cli(["reproduce", "paper", "--preset", "cpu256", "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | teacher | teacher | unet_r18_w05 | 800 |" in printed
    assert "| 0 | oracle | oracle | unet_r18_w05 | 600 | 0.0003 | teacher |" in printed
    assert "| 0 | ddc | ddc | unet_r18_w05 | 600 | 0.0003 | seg_teacher |" in printed
    assert "39 runs, 17400 training steps." in printed


@pytest.mark.parametrize("settings, message", [
    ({"ddc_window": 4}, "ddc_window must be odd"),
    ({"trimap_kernel_range": (5, 2)}, "1 <= low <= high"),
])
def test_bad_ddc_settings_fail_before_any_training(settings, message):
    with pytest.raises(ValueError, match=message):
        ReproduceConfig(**settings)


@pytest.mark.parametrize("args, message", [
    (("ddc",), "run the 'seg' trial first"),
    (("teacher", "--alpha-norm", "mse"), "run the 'seg' trial first"),
])
def test_a_trial_without_its_base_is_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--preset", "tiny", "--work", str(tmp_path / "work"), "--steps", "1"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error


def test_a_trial_replaces_the_presets_crops_network_and_pool(tmp_path, capsys):
    # The cpu256 trials (docs/science-notes.md section 3) at the tiny preset's size.
    work = ["--preset", "tiny", "--work", str(tmp_path / "work"), "--steps", "2",
            "--model", "unet_r18_w05", "--crop", "32", "--crop-sizes", "40", "48",
            "--backgrounds", "scenes"]
    seg = _run(capsys, "seg", *work, "--lr", "5e-4")
    assert seg["crop_sizes"] == [40, 48] and seg["result"]["natural"]["mse"] >= 0
    base = tmp_path / "work" / "trial" / "base.pretrain.pt"
    from mlb.checkpoint import read_checkpoint

    assert read_checkpoint(base).train_config["lr"] == 5e-4
    # the same base scored at another inference short side (the preset's is its size, 48)
    rescored = _run(capsys, "seg", *work, "--lr", "5e-4", "--short-side", "32")
    assert rescored["short_side"] == 32
    assert rescored["result"]["natural"]["mse"] != seg["result"]["natural"]["mse"]
    teacher = _run(capsys, "teacher", *work, "--photographic", "--lr", "2e-4")
    assert set(teacher["result"]) == {"natural", "composite"}
    assert (tmp_path / "work" / "trial" / "teacher-photographic-lr0.0002-2.pt").is_file()
    # the alpha term replaced (the preset's, tiny's L1, otherwise)
    _run(capsys, "teacher", *work, "--photographic", "--lr", "2e-4", "--alpha-norm", "mse")
    trial = tmp_path / "work" / "trial" / "teacher-photographic-mse-lr0.0002-2.pt"
    assert read_checkpoint(trial).train_config["request"]["loss"]["alpha_norm"] == "mse"
    manifest = tmp_path / "work" / "data" / "composite" / "synth.json"
    assert json.loads(manifest.read_text())["backgrounds"] == "scenes"


def test_a_bad_replacement_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["seg", "--preset", "tiny", "--work", str(tmp_path), "--crop", "4"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "crop" in error and "Traceback" not in error, error


@pytest.mark.parametrize("args, message", [
    (("--lr", "0"), "--lr: must be a finite number above 0, got 0"),
    (("--lr", "nan"), "--lr: must be a finite number above 0"),
    (("--threads", "0"), "--threads: must be a finite number above 0"),
    (("--steps", "0"), "--steps: must be a finite number above 0"),
    (("--model", "nosuch"), "nosuch"),
    (("--crop-sizes", "1000"), "exceed the largest scaled image side"),
])
def test_bad_trial_options_are_one_line_before_any_data(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as stopped:
        main(["seg", "--preset", "tiny", "--work", str(tmp_path / "work"), *args])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error and "Traceback" not in error, error
    assert not (tmp_path / "work" / "data").exists()  # refused before generating anything


def test_crop_sides_are_checked_when_the_config_is_made():
    with pytest.raises(ValueError, match="exceed the largest scaled image side"):
        ReproduceConfig(size=96, crop=64, crop_sizes=(200,))
    with pytest.raises(ValueError, match="greater than 0"):
        ReproduceConfig(crop_sizes=(0,))
    assert ReproduceConfig(size=96, crop=64, crop_sizes=(96, 120)).augment.crop_sizes == (96, 120)
