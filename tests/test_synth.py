"""The built-in benchmark: determinism, independence of count, hard mattes, annotated masks."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from mlb.cli import main
from mlb.data import synth
from mlb.data.corpus import find_matte_samples, find_segmentation_samples, find_validation_samples
from mlb.data.imageio import read_alpha, read_image, read_mask

SIZE = 96


def file_bytes(root):
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    composite = synth.make_composite_corpus(root / "matte", count=4, size=SIZE, seed=7)
    natural = synth.make_natural_corpus(root / "natural", count=4, size=SIZE, seed=7)
    return root, composite, natural


def test_composite_layout_reads_back(corpora):
    root, summary, _ = corpora
    assert summary.count == 4 and summary.domain == "composite" and summary.seconds > 0
    assert sorted(p.name for p in (root / "matte").iterdir()) == ["alpha", "bg", "fg",
                                                                  "synth.json"]
    scan = find_matte_samples(root / "matte/fg", root / "matte/alpha", root / "matte/bg")
    assert [s.sample_id for s in scan.samples] == ["00000", "00001", "00002", "00003"]
    assert len(scan.backgrounds) == 4 and scan.quarantine == ()
    image = read_image(scan.samples[0].foreground_path)
    assert image.shape == (SIZE, SIZE, 3)
    assert read_alpha(scan.samples[0].alpha_path, size=image.shape[:2]).shape == (SIZE, SIZE)
    record = json.loads((root / "matte/synth.json").read_text())
    assert record == {"generator": "mlb.data.synth", "version": synth.GENERATOR_VERSION,
                      "domain": "composite", "count": 4, "size": SIZE, "seed": 7,
                      "backgrounds": "patterns"}


def test_natural_layout_reads_back(corpora):
    root, _, summary = corpora
    assert summary.domain == "natural"
    images, masks = root / "natural/images", root / "natural/masks"
    assert len(find_segmentation_samples(images, masks).samples) == 4
    assert len(find_validation_samples(images, root / "natural/alphas").samples) == 4
    for path in sorted(images.iterdir()):
        assert path.suffix == ".jpg"
        with Image.open(path) as opened:
            assert opened.format == "JPEG" and opened.size == (SIZE, SIZE)


def test_same_seed_same_bytes_other_seed_differs(corpora, tmp_path):
    root, _, _ = corpora
    synth.make_composite_corpus(tmp_path / "again", count=4, size=SIZE, seed=7)
    assert file_bytes(tmp_path / "again") == file_bytes(root / "matte")
    synth.make_natural_corpus(tmp_path / "other", count=2, size=SIZE, seed=8)
    other = file_bytes(tmp_path / "other")
    original = file_bytes(root / "natural")
    assert all(other[name] != original[name] for name in other if name != "synth.json")


def test_sample_i_does_not_depend_on_count(corpora, tmp_path):
    root, _, _ = corpora
    synth.make_natural_corpus(tmp_path / "two", count=2, size=SIZE, seed=7)
    two = file_bytes(tmp_path / "two")
    four = file_bytes(root / "natural")
    for name in ("images/00001.jpg", "masks/00001.png", "alphas/00000.png"):
        assert two[name] == four[name]


def transition_stats(alpha):
    coded = np.rint(alpha * 255)
    transition = (coded > 0) & (coded < 255)
    hard = (coded > 127).astype(np.uint8)
    edge = cv2.morphologyEx(hard, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    # edge marks a 2-px line along the outline; a bare anti-aliased outline has a transition
    # region about that long and one pixel wide.
    return transition.sum() / (coded > 0).sum(), transition.sum() / (edge.sum() / 2)


def test_transition_region_is_wide_and_intricate():
    stats = np.array([transition_stats(synth.render_composite_sample(0, index, 128)["alpha"])
                      for index in range(10)])
    share, width = stats[:, 0], stats[:, 1]
    assert 0.05 < share.mean() < 0.4  # of the person's pixels, a sizeable part is partial
    assert width.min() > 1.0 and width.mean() > 1.5  # wider than an anti-aliased outline


def test_semi_transparent_parts_and_strands_exist():
    alphas = [synth.render_composite_sample(3, index, 128)["alpha"] for index in range(12)]
    mid = [float(((a > 0.25) & (a < 0.75)).mean()) for a in alphas]
    assert max(mid) > 0.02  # a veil, a shawl or motion blur: large mid-alpha areas
    faint = [float(((a > 0) & (a < 0.25)).mean()) for a in alphas]
    assert min(faint) > 0.0005  # every person has faint strands / soft edges


def test_natural_masks_look_annotated():
    for index in range(6):
        sample = synth.render_natural_sample(0, index, 128)
        mask, alpha = sample["coarse_mask"], sample["alpha"]
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert 60 <= sample["quality"] <= 90
        truth = alpha > 0.5
        mask = mask.astype(bool)
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert 0.85 < iou < 0.995  # jittered and simplified, but the same person
        faint = (alpha > 0) & (alpha < 0.3)
        assert mask[faint].mean() < 0.5  # strands and faint edges are mostly not traced


def test_foreground_is_finite_everywhere():
    foreground, alpha = synth.render_person(np.random.default_rng(5), 64)
    assert foreground.shape == (64, 64, 3) and alpha.shape == (64, 64)
    assert np.isfinite(foreground).all() and foreground.min() >= 0 and foreground.max() <= 255
    assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.max() == 1


def test_coarse_mask_from_alpha_drops_strands():
    alpha = np.zeros((128, 128), np.float32)
    alpha[40:128, 30:98] = 1.0
    cv2.line(alpha, (64, 40), (64, 5), 1.0, 1)  # a 1-px strand fully opaque
    mask = synth.coarse_mask_from_alpha(alpha, rng=np.random.default_rng(0))
    assert mask[5:30, 60:69].sum() == 0
    assert mask[60:120, 40:90].mean() == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"count"):
        synth.make_composite_corpus(tmp_path, count=0, size=64)
    with pytest.raises(ValueError, match=r"size"):
        synth.make_natural_corpus(tmp_path, count=1, size=8)


def test_cli_generates_and_previews(tmp_path, capsys):
    assert main(["synth", "composite", "--out", str(tmp_path / "m"), "--count", "2",
                 "--size", "64", "--quiet"]) == 0
    assert main(["synth", "natural", "--out", str(tmp_path / "n"), "--count", "3",
                 "--size", "64", "--seed", "2", "--quiet"]) == 0
    assert "natural: 3 samples of 64px" in capsys.readouterr().out
    out = tmp_path / "preview.png"
    assert main(["synth", "preview", "--composite", str(tmp_path / "m"), "--natural",
                 str(tmp_path / "n"), "--out", str(out), "--height", "64"]) == 0
    grid = read_image(out)
    assert grid.shape[0] == 5 * 64 + 6 * 4  # five rows of tiles with gaps
    assert read_mask(tmp_path / "n/masks/00002.png").shape == (64, 64)


def test_cli_reports_bad_values_in_one_line(tmp_path, capsys):
    assert main(["synth", "natural", "--out", str(tmp_path), "--count", "0"]) == 2
    assert "count must be >= 1" in capsys.readouterr().err
    assert main(["synth", "preview", "--out", str(tmp_path / "p.png")]) == 2


def test_composite_images_form_a_validation_set(tmp_path):
    # --with-images: images/ + alpha/ is a composite-domain validation set, and each image
    # is exactly its foreground composited onto its own background.
    assert main(["synth", "composite", "--out", str(tmp_path), "--count", "3",
                 "--size", str(SIZE), "--seed", "7", "--with-images", "--quiet"]) == 0
    scan = find_validation_samples(tmp_path / "images", tmp_path / "alpha")
    assert [s.sample_id for s in scan.samples] == ["00000", "00001", "00002"]
    stem = "00001"
    foreground = read_image(tmp_path / "fg" / f"{stem}.png").astype(np.float32)
    background = read_image(tmp_path / "bg" / f"{stem}.png").astype(np.float32)
    alpha = read_alpha(tmp_path / "alpha" / f"{stem}.png")[:, :, None]
    expected = alpha * foreground + (1 - alpha) * background
    image = read_image(tmp_path / "images" / f"{stem}.png").astype(np.float32)
    assert np.abs(image - expected).max() <= 1.0  # alpha stored as 8-bit
    assert np.abs(image - background).max() > 50  # a person is really there


def test_scene_backgrounds_keep_the_people_and_change_only_the_pool(tmp_path):
    # --backgrounds scenes: the same foregrounds and alphas, another pool, recorded.
    patterns, scenes = tmp_path / "patterns", tmp_path / "scenes"
    assert main(["synth", "composite", "--out", str(patterns), "--count", "3", "--size",
                 str(SIZE), "--seed", "7", "--quiet"]) == 0
    assert main(["synth", "composite", "--out", str(scenes), "--count", "3", "--size",
                 str(SIZE), "--seed", "7", "--backgrounds", "scenes", "--quiet"]) == 0
    first, second = file_bytes(patterns), file_bytes(scenes)
    for name in first:
        if name.startswith(("fg/", "alpha/")):
            assert first[name] == second[name], name
        elif name.startswith("bg/"):
            assert first[name] != second[name], name
    assert json.loads((scenes / "synth.json").read_text())["backgrounds"] == "scenes"
    assert file_bytes(scenes) == file_bytes(synth.make_composite_corpus(
        tmp_path / "again", count=3, size=SIZE, seed=7, backgrounds="scenes").out_dir)


def test_scene_plates_look_like_the_natural_domains_backgrounds():
    # Natural scenes are smooth (defocused, no person), not the patterns' hard stripes: the
    # mean gradient of a plate is far below a pattern background's on average.
    def roughness(image):
        grey = image.astype(np.float32).mean(axis=2)
        return float(np.abs(np.diff(grey, axis=1)).mean())

    plates = [synth.render_composite_sample(0, i, 96, backgrounds="scenes")["background"]
              for i in range(6)]
    patterns = [synth.render_composite_sample(0, i, 96)["background"] for i in range(6)]
    assert all(p.shape == (96, 96, 3) and p.dtype == np.uint8 for p in plates)
    assert np.mean([roughness(p) for p in plates]) < np.mean([roughness(p) for p in patterns])
    with pytest.raises(ValueError, match="backgrounds must be one of patterns, scenes"):
        synth.render_composite_sample(0, 0, 96, backgrounds="photos")
    with pytest.raises(ValueError, match="backgrounds must be one of"):
        synth.make_composite_corpus("/nonexistent/never-written", count=1, size=64,
                                    backgrounds="photos")


def test_the_clis_pool_choices_are_the_generators():
    from mlb.cli.synth import BACKGROUND_POOLS_CHOICES

    assert BACKGROUND_POOLS_CHOICES == synth.BACKGROUND_POOLS


def test_a_folder_holding_another_corpus_is_refused(tmp_path):
    # Writing another pool, seed or a smaller count over a corpus would leave a mix.
    out = tmp_path / "matte"
    synth.make_composite_corpus(out, count=4, size=SIZE, seed=1)
    before = file_bytes(out)
    for options, message in (({"count": 4, "backgrounds": "scenes"}, "holds another corpus"),
                             ({"count": 4, "seed": 2}, "holds another corpus"),
                             ({"count": 2}, "holds another corpus")):
        with pytest.raises(ValueError, match=message):
            synth.make_composite_corpus(out, size=SIZE, **{"seed": 1, **options})
    assert file_bytes(out) == before  # nothing written
    synth.make_composite_corpus(out, count=4, size=SIZE, seed=1)  # the same corpus: fine
    assert file_bytes(out) == before
    # A manifest of a release before pools is a patterns corpus.
    record = json.loads((out / "synth.json").read_text())
    del record["backgrounds"]
    (out / "synth.json").write_text(json.dumps(record))
    synth.make_composite_corpus(out, count=4, size=SIZE, seed=1)
    # Files beyond the count with no manifest (a folder of something else) are refused too.
    (out / "synth.json").unlink()
    (out / "bg" / "holiday.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"bg holds 1 file\(s\) .* \(first: holiday.png\)"):
        synth.make_composite_corpus(out, count=4, size=SIZE, seed=1)


def test_the_cli_refuses_a_mix_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "n")
    assert main(["synth", "natural", "--out", out, "--count", "3", "--size", "64",
                 "--quiet"]) == 0
    assert main(["synth", "natural", "--out", out, "--count", "2", "--size", "64",
                 "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "holds another corpus" in error, error
