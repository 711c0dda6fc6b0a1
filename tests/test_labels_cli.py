"""``mlb labels list / show / verify / preview`` on real stores (verify also as a process)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image
from relabel_corpus import make_corpus, make_request, make_teacher, start_cli

from mlb.cli import main
from mlb.labels.relabel import relabel


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("labels-cli")
    images, masks = make_corpus(root / "corpus", 10)
    teacher = make_teacher(root / "teacher.pt")
    plain = relabel(make_request(teacher, images, masks, root / "store"), progress=False)
    request = make_request(teacher, images, masks, root / "store", store_teacher_alpha=True)
    request = request.model_copy(update={"parent_version": plain.version_id, "ema_round": 1})
    with_teacher = relabel(request, progress=False)
    return {"root": root, "store": str(root / "store"), "plain": plain.version_id,
            "with_teacher": with_teacher.version_id}


def test_list_shows_every_version_and_latest(store, capsys):
    assert main(["labels", "list", "--store", store["store"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "CORPUS", "STATE"]
    assert any(line.startswith(store["plain"] + " ") and "published" in line for line in lines)
    assert any(line.startswith(store["with_teacher"] + " *") for line in lines)

    assert main(["labels", "list", "--store", store["store"], "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {v["version_id"]: v["latest"] for v in listed} == {
        store["plain"]: False, store["with_teacher"]: True}


def test_show_prints_metadata_counts_and_lineage(store, capsys):
    assert main(["labels", "show", "latest", "--store", store["store"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version_id"] == store["with_teacher"] and shown["published"]
    assert shown["counts"] == {"samples": 10, "labelled": 10, "quarantined": 0}
    metadata = shown["metadata"]
    assert metadata["lineage"] == {"parent_version": store["plain"], "ema_round": 1,
                                   "teacher_label_version": None}
    assert len(metadata["teacher"]["sha256"]) == 64 and metadata["teacher"]["weights"] == "model"
    assert metadata["blend"] == {"mode": "soft", "band_px": None}
    assert shown["kinds"] == ["blended_alpha", "blended_boundary", "teacher_alpha"]


def test_show_unknown_version_is_one_line_error(store, capsys):
    assert main(["labels", "show", "v-0123456789abcdef", "--store", store["store"]]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mlb labels: error:") and "v-0123456789abcdef" in error


def test_verify_names_the_damaged_shard(store, tmp_path, capsys):
    damaged = tmp_path / "store"
    shutil.copytree(store["store"], damaged)
    version = store["plain"]
    assert main(["labels", "verify", version, "--store", str(damaged), "--quiet"]) == 0
    assert "ok, 3 shards verified" in capsys.readouterr().out

    chunk = next((damaged / "versions" / version / "shards" / "00001" / "blended_alpha")
                 .rglob("c/*"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    process = start_cli(["labels", "verify", version, "--store", str(damaged), "--quiet"])
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "damaged shard 1:" in stderr and "damaged shard 0" not in stderr
    assert "1 of 3 shards damaged: 1" in stderr


@pytest.mark.parametrize("which", ["plain", "with_teacher"])
def test_preview_writes_a_grid(store, tmp_path, capsys, which):
    out = tmp_path / "preview.png"
    sizes = {}
    for count in (2, 3):
        assert main(["labels", "preview", store[which], "--store", store["store"],
                     "--out", str(out), "--count", str(count), "--height", "40"]) == 0
        assert capsys.readouterr().out.strip() == str(out)
        with Image.open(out) as grid:
            sizes[count] = grid.size
            pixels = np.asarray(grid)
        assert pixels.ndim == 3 and pixels.shape[2] == 3
    # One row per sample, tiles 40 px high: height = rows * (40 + gap) + gap.
    row = sizes[3][1] - sizes[2][1]
    gap = row - 40
    assert 0 < gap <= 8 and sizes[2][1] == 2 * row + gap
    # Four tiles per row (image | teacher or boundary | blended | mask), each at least
    # 40 * 50 / 96 px wide for these aspect ratios, plus the sample-id labels.
    assert sizes[3][0] >= 4 * 20 + 3 * gap


def _write_truths(store: dict, count: int) -> tuple:
    """Soft true alphas (blurred masks, at the image size) for the first ``count`` samples."""
    from mlb.data.imageio import image_size, read_mask

    corpus, truths = store["root"] / "corpus", store["root"] / f"truths-{count}"
    truths.mkdir(exist_ok=True)
    written = {}
    for image in sorted((corpus / "images").iterdir())[:count]:
        mask = read_mask(corpus / "masks" / f"{image.stem}.png", size=image_size(image))
        truth = cv2.GaussianBlur(mask, (0, 0), 1.5)
        cv2.imwrite(str(truths / f"{image.stem}.png"), np.round(truth * 255).astype(np.uint8))
        written[image.stem] = (mask, cv2.imread(str(truths / f"{image.stem}.png"), 0) / 255.0)
    return truths, written


@pytest.mark.parametrize("which", ["plain", "with_teacher"])
def test_score_compares_labels_and_masks_with_true_alpha(store, tmp_path, capsys, which):
    from storage import LabelStore

    truths, written = _write_truths(store, 6)
    out = tmp_path / "score.json"
    assert main(["labels", "score", store[which], "--store", store["store"], "--alphas",
                 str(truths), "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "6 samples scored, 4 without a true alpha" in printed
    assert "| coarse mask |" in printed and "| blended alpha |" in printed
    score = json.loads(out.read_text())
    assert (score["scored"], score["unscored"]) == (6, 4)
    assert ("teacher_alpha" in score["mean"]) == (which == "with_teacher")
    # The same numbers, computed here from the stored bytes.
    version = LabelStore(store["store"]).open_version(store[which])
    mask_mse, blended_mse, inside = [], [], []
    for sample_id in version.sample_ids:
        stem = version.entry(sample_id).image_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem not in written:
            continue
        mask, truth = written[stem]
        labels = version.read(sample_id)
        band = (truth > 0.05) & (truth < 0.95)
        mask_mse.append(np.mean((mask - truth) ** 2) * 1e3)
        blended_mse.append(np.mean((labels.blended_alpha / 255.0 - truth) ** 2) * 1e3)
        inside.append(np.mean(labels.blended_boundary[band] / 255.0))
    assert score["mean"]["coarse_mask"]["mse"] == pytest.approx(np.mean(mask_mse), rel=1e-4)
    assert score["mean"]["blended_alpha"]["mse"] == pytest.approx(np.mean(blended_mse),
                                                                  rel=1e-4)
    assert score["blend_weight"]["boundary"] == pytest.approx(np.mean(inside), rel=1e-4)


def test_score_without_any_true_alpha_is_a_clear_error(store, tmp_path, capsys):
    empty = tmp_path / "alphas"
    empty.mkdir()
    assert main(["labels", "score", store["plain"], "--store", store["store"], "--alphas",
                 str(empty), "--quiet"]) == 2
    assert f"has a true alpha in {empty}" in capsys.readouterr().err
