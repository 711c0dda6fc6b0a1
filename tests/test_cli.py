"""The ``mlb`` command line itself: a cheap parser, every subcommand's help, library defaults.

Every ``mlb`` command (even ``mlb --help``) builds the whole parser, which imports every module
in ``COMMANDS``; a module-level torch import in any of them costs every command seconds. So the
subcommand modules import the library where they use it, and options left out stay None so the
library applies its own defaults (no copies of its constants in the CLI).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlb.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import sys; from mlb.cli import build_parser; build_parser(); "
         "heavy = {'torch', 'torchvision', 'cv2', 'zarr', 'prefect'} & set(sys.modules); "
         "assert not heavy, heavy")


def run_python(*args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter (this one has torch imported already, by conftest)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def listed_commands(help_text: str) -> set[str]:
    """Names argparse lists as subcommands: indented lines starting with the name."""
    return {name for name in COMMANDS if re.search(rf"^ +{re.escape(name)}\b", help_text, re.M)}


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                  ) -> list[tuple[str, ...]]:
    """Every subcommand path below ``parser``, nested ones too: ("train", "teacher") ..."""
    paths: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(*prefix, name), *command_paths(sub, (*prefix, name))]
    return paths


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_building_the_parser_imports_no_heavy_module():
    result = run_python("-c", PROBE)
    assert result.returncode == 0, result.stderr


def test_heavy_import_probe_can_fail():
    # zarr: the cheapest of the five to import.
    result = run_python("-c", "import zarr; " + PROBE)
    assert result.returncode != 0 and "zarr" in result.stderr


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert listed_commands(capsys.readouterr().out) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_help_exits_zero(command, capsys):
    paths = [path for path in command_paths(build_parser()) if path[0] == command]
    assert (command,) in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        assert capsys.readouterr().out.startswith(f"usage: mlb {' '.join(path)}"), path


def test_python_dash_m_help():
    result = run_python("-m", "mlb.cli", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mlb")
    assert listed_commands(result.stdout) == set(COMMANDS)


TRAIN_DDC = ("train", "ddc", "--images", "img", "--masks", "mask", "--model", "unet_r18",
             "--steps", "3", "--out", "run.pt")


def test_train_options_left_out_take_the_library_defaults():
    from mlb.cli.train import _shared
    from mlb.data.augment import AugmentConfig
    from mlb.losses import LossConfig
    from mlb.train import TrainConfig

    # Output size defaults to the largest crop size (the CLI's rule, not AugmentConfig's).
    largest_crop = max(AugmentConfig().crop_sizes)
    assert _shared(parse(*TRAIN_DDC)) == {
        "model": "unet_r18", "out": "run.pt", "train": TrainConfig(steps=3),
        "loss": LossConfig(), "augment": AugmentConfig(output_size=largest_crop)}


def test_train_options_given_override_the_defaults():
    from mlb.cli.train import _shared
    from mlb.data.augment import AugmentConfig
    from mlb.losses import LossConfig
    from mlb.train import TrainConfig

    shared = _shared(parse(*TRAIN_DDC, "--grad-clip", "0", "--aug-short-side", "0",
                           "--batch-size", "2", "--seed", "5", "--no-amp",
                           "--boundary-weight", "0.5", "--crop-size", "32", "48"))
    # 0 means "off" for both: no clipping, keep the stored size.
    assert shared["train"] == TrainConfig(steps=3, grad_clip=None, batch_size=2, seed=5,
                                          amp=False)
    assert shared["augment"] == AugmentConfig(short_side=None, crop_sizes=(32, 48),
                                              output_size=48)
    assert shared["loss"] == LossConfig(boundary_weight=0.5)


def test_a_crop_wider_than_the_scaled_image_is_one_line(capsys):
    # Every crop would be mostly padding: refused before any store or file is read.
    assert main(["train", "ddc", *TRAIN_DDC[2:], "--crop-size", "2000"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mostly padding" in err and "768 px" in err


def test_evaluate_options_left_out_take_the_library_defaults():
    from mlb.cli.evaluate import request_from_args
    from mlb.evaluate import EvaluateRequest

    required = ("evaluate", "--model", "m.pt", "--images", "img", "--alphas", "alpha")
    assert request_from_args(parse(*required)) == EvaluateRequest(
        model="m.pt", images="img", alphas="alpha")
    given = parse(*required, "--short-side", "64", "--weights", "ema", "--grid", "g.png",
                  "--grid-rows", "2", "--json", "r.json", "--batch-size", "3", "--device", "cpu")
    assert request_from_args(given) == EvaluateRequest(
        model="m.pt", images="img", alphas="alpha", short_side=64, weights="ema",
        grid_path="g.png", grid_rows=2, json_path="r.json", batch_size=3, device="cpu")


# ------------------------------------------------------ options read from the config models


def _help(*command: str) -> str:
    sub = build_parser()._subparsers._group_actions[0].choices[command[0]]
    return " ".join(sub.format_help().split())


def test_help_shows_the_config_models_defaults():
    from mlb.evaluate import EvaluateRequest
    from mlb.labels.request import RelabelConfig

    relabel_help, evaluate_help = _help("relabel"), _help("evaluate")
    defaults = RelabelConfig()
    for flag, value in (("--batch-size", defaults.inference.batch_size),
                        ("--short-side", defaults.inference.short_side),
                        ("--shard-size", defaults.shard_size),
                        ("--decode-threads", defaults.decode_threads)):
        assert re.search(rf"{flag} \S+ [^-]*\(default: {value}\)", relabel_help), flag
    inference = EvaluateRequest(model="m", images="i", alphas="a").inference
    for flag, value in (("--short-side", inference.short_side),
                        ("--batch-size", inference.batch_size),
                        ("--grid-rows", EvaluateRequest.model_fields["grid_rows"].default)):
        assert re.search(rf"{flag} \S+ [^-]*\(default: {value}\)", evaluate_help), flag
    from mlb.inference import InferenceConfig

    assert f"(default: {InferenceConfig().short_side})" in _help("predict")


def test_options_left_out_take_the_models_defaults():
    from mlb.cli.relabel import request_from_args
    from mlb.labels.request import RelabelConfig

    args = build_parser().parse_args(["relabel", "--teacher", "t.pt", "--images", "i",
                                      "--masks", "m", "--store", "s"])
    assert (args.batch_size, args.short_side, args.device) == (None, None, None)
    assert request_from_args(args).config == RelabelConfig()
    args = build_parser().parse_args(["relabel", "--teacher", "t.pt", "--images", "i",
                                      "--masks", "m", "--store", "s", "--batch-size", "3"])
    assert request_from_args(args).config.inference.batch_size == 3


def test_an_option_naming_a_missing_field_fails_loudly():
    from mlb.cli.fields import field_help

    assert field_help("mlb.labels.request:RelabelConfig", "shard_size", "x") == "x (default: 64)"
    with pytest.raises(KeyError, match="RelabelConfig has no field 'shards'"):
        field_help("mlb.labels.request:RelabelConfig", "shards")
