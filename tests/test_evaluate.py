"""``mlb evaluate`` and ``mlb predict`` on a tiny validation set (an untrained checkpoint)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from tiny_data import write_tiny_corpus, write_untrained_checkpoint

from mlb.cli import main
from mlb.data.imageio import read_alpha, read_image
from mlb.evaluate import COLUMNS, EvaluateRequest, evaluate_checkpoint, metrics_table


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), count=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_untrained_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


def test_evaluate_prints_the_table_and_writes_json_and_grid(corpus, checkpoint, tmp_path,
                                                            capsys):
    report_path, grid_path = tmp_path / "report.json", tmp_path / "grid.png"
    code = main(["evaluate", "--model", str(checkpoint), "--images", str(corpus.val_images),
                 "--alphas", str(corpus.val_alphas), "--json", str(report_path),
                 "--grid", str(grid_path), "--short-side", "64", "--device", "cpu",
                 "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| model | MSE | SAD | MAD | Grad | Conn | MSE (boundary)")
    assert sum(line.startswith("| ") for line in printed.splitlines()) == 3  # one model row
    assert "short side resized to 64" in printed and "0.05 < gt < 0.95" in printed
    report = json.loads(report_path.read_text())
    assert report["images"] == 3 and report["short_side"] == 64
    assert [row["sample_id"] for row in report["per_image"]] == ["00000", "00001", "wide"]
    # The mean is over images (NaN-free here: every synthetic alpha has a boundary).
    for name in COLUMNS:
        values = [row["metrics"][name] for row in report["per_image"]]
        assert report["mean"][name] == pytest.approx(np.mean(values))
    with Image.open(grid_path) as grid:
        assert grid.height > 3 * 100  # three rows of 160 px tiles


def test_scores_are_taken_at_the_ground_truth_resolution(corpus, checkpoint):
    report = evaluate_checkpoint(EvaluateRequest(
        model=str(checkpoint), images=str(corpus.val_images), alphas=str(corpus.val_alphas),
        short_side=32, device="cpu"), progress=False)
    wide = next(row for row in report.per_image if row.sample_id == "wide")
    height, width = read_alpha(corpus.val_alphas / "wide.png").shape
    assert (height, width) == (41, 30)
    # SAD = sum|e| / 1000 and MAD = mean|e| x 1e3 over the same H x W pixels.
    assert wide.metrics["sad"] * 1000 == pytest.approx(wide.metrics["mad"] / 1e3 * height * width)
    assert report.kind == "teacher" and report.label_version is None


def test_metrics_table_rows_and_missing_values():
    table = metrics_table({"teacher": {"mse": 6.676, "mse_boundary": 48.088},
                           "student": {"mse": 4.391, "mse_boundary": math.nan}}, short_side=512)
    lines = table.splitlines()
    assert lines[2].startswith("| teacher | 6.676 | n/a |")
    assert lines[3].startswith("| student | 4.391 |") and lines[3].endswith("n/a | n/a | n/a |")
    assert "short side resized to 512" in lines[-1]


def test_unpaired_validation_folder_is_a_clear_error(corpus, checkpoint, tmp_path, capsys):
    alphas = tmp_path / "alphas"
    alphas.mkdir()
    (alphas / "00000.png").write_bytes((corpus.val_alphas / "00000.png").read_bytes())
    code = main(["evaluate", "--model", str(checkpoint), "--images", str(corpus.val_images),
                 "--alphas", str(alphas), "--quiet"])
    assert code == 2
    assert "no alpha with stem" in capsys.readouterr().err


def test_predict_writes_mattes_and_cutouts_at_each_images_size(corpus, checkpoint, tmp_path):
    out = tmp_path / "mattes"
    code = main(["predict", "--model", str(checkpoint), "--images", str(corpus.val_images),
                 "--out", str(out), "--cutout", "--short-side", "32", "--device", "cpu",
                 "--quiet"])
    assert code == 0
    assert sorted(path.name for path in out.glob("*.png")) == ["00000.png", "00001.png",
                                                               "wide.png"]
    for stem in ("00000", "wide"):
        image = read_image(next(corpus.val_images.glob(f"{stem}.*")))
        alpha = np.asarray(Image.open(out / f"{stem}.png"))
        assert alpha.shape == image.shape[:2] and alpha.dtype == np.uint8
        with Image.open(out / "cutout" / f"{stem}.png") as cutout:
            assert cutout.mode == "RGBA"
            rgba = np.asarray(cutout)
        np.testing.assert_array_equal(rgba[:, :, 3], alpha)
        np.testing.assert_array_equal(rgba[:, :, :3], image)
