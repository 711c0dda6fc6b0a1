"""Folder layouts -> sample lists: strict pairing, quarantine, deterministic order."""

import numpy as np
import pytest

from mlb.data.corpus import (
    BadSample,
    CorpusScan,
    find_matte_samples,
    find_segmentation_samples,
    find_validation_samples,
    list_images,
    natural_sort_key,
)
from mlb.data.imageio import write_jpeg, write_png


def make_pairs(root, stems, *, image_ext=".jpg", mask_ext=".png", mask_scale=1):
    images, masks = root / "images", root / "masks"
    for stem in stems:
        image = np.full((16, 24, 3), 100, np.uint8)
        write = write_jpeg if image_ext.lower() in (".jpg", ".jpeg") else write_png
        write(images / f"{stem}{image_ext}", image)
        write_png(masks / f"{stem}{mask_ext}",
                  np.zeros((16 * mask_scale, 24 * mask_scale), np.uint8))
    return images, masks


def test_pairs_by_stem_in_natural_order(tmp_path):
    images, masks = make_pairs(tmp_path, ["10", "2", "1", "img_3"])
    scan = find_segmentation_samples(images, masks)
    assert [s.sample_id for s in scan.samples] == ["1", "2", "10", "img_3"]
    assert all(s.image_path.stem == s.mask_path.stem == s.sample_id for s in scan.samples)
    assert scan.quarantine == ()
    assert scan.summary() == "4 samples, 0 quarantined"


def test_extensions_match_case_insensitively_and_junk_is_ignored(tmp_path):
    images, masks = make_pairs(tmp_path, ["a", "b"], image_ext=".JPG", mask_ext=".PNG")
    (images / ".DS_Store").write_bytes(b"junk")
    (images / "README.txt").write_text("not an image")
    scan = find_segmentation_samples(images, masks)
    assert [s.sample_id for s in scan.samples] == ["a", "b"]


def test_masks_at_another_resolution_pair(tmp_path):
    images, masks = make_pairs(tmp_path, ["a"], mask_scale=2)
    assert len(find_segmentation_samples(images, masks).samples) == 1


def test_missing_mask_raises_naming_the_image(tmp_path):
    images, masks = make_pairs(tmp_path, ["a", "b", "c"])
    (masks / "b.png").unlink()
    with pytest.raises(BadSample, match=r"b\.jpg: no mask with stem 'b'") as info:
        find_segmentation_samples(images, masks)
    assert info.value.path == images / "b.jpg"


def test_extra_mask_raises_naming_the_mask(tmp_path):
    images, masks = make_pairs(tmp_path, ["a"])
    write_png(masks / "stray.png", np.zeros((16, 24), np.uint8))
    with pytest.raises(BadSample, match=r"stray\.png: no image with stem 'stray'"):
        find_segmentation_samples(images, masks)


def test_duplicate_stems_are_ambiguous(tmp_path):
    images, masks = make_pairs(tmp_path, ["a", "b"])
    write_png(images / "a.png", np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(BadSample, match=r"duplicate image stem 'a'"):
        find_segmentation_samples(images, masks)
    scan = find_segmentation_samples(images, masks, skip_bad=True)
    assert [s.sample_id for s in scan.samples] == ["b"]
    assert {q.path.name for q in scan.quarantine} == {"a.jpg", "a.png"}


def test_skip_bad_quarantines_every_problem_with_its_reason(tmp_path):
    images, masks = make_pairs(tmp_path, ["good", "lonely", "text", "empty", "wide"])
    (masks / "lonely.png").unlink()
    write_png(masks / "orphan.png", np.zeros((16, 24), np.uint8))
    (images / "text.jpg").write_text("not a jpeg")
    (masks / "empty.png").write_bytes(b"")
    write_png(masks / "wide.png", np.zeros((16, 80), np.uint8))  # another aspect ratio
    with pytest.raises(BadSample, match=r"and 4 more bad files"):
        find_segmentation_samples(images, masks)
    scan = find_segmentation_samples(images, masks, skip_bad=True)
    assert [s.sample_id for s in scan.samples] == ["good"]
    reasons = {q.path.name: q.reason for q in scan.quarantine}
    assert set(reasons) == {"lonely.jpg", "orphan.png", "text.jpg", "empty.png", "wide.png"}
    assert "no mask" in reasons["lonely.jpg"] and "no image" in reasons["orphan.png"]
    assert "not an image" in reasons["text.jpg"] and "empty" in reasons["empty.png"]
    assert "aspect ratio" in reasons["wide.png"]
    assert scan.summary() == "1 samples, 5 quarantined"


def test_missing_or_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere"):
        find_segmentation_samples(tmp_path / "nowhere", tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"no images"):
        find_segmentation_samples(tmp_path / "a", tmp_path / "b")


def test_validation_alpha_must_match_exactly(tmp_path):
    images, alphas = make_pairs(tmp_path, ["ok", "scaled"])
    write_png(alphas / "scaled.png", np.zeros((32, 48), np.uint8))  # resized ground truth
    with pytest.raises(BadSample, match=r"scaled.png.*must be equal"):
        find_validation_samples(images, alphas)
    scan = find_validation_samples(images, alphas, skip_bad=True)
    assert [s.sample_id for s in scan.samples] == ["ok"]
    assert scan.samples[0].alpha_path == alphas / "ok.png"


def test_matte_corpus_with_background_pool(tmp_path):
    foregrounds, alphas = make_pairs(tmp_path, ["p1", "p2"], image_ext=".png")
    backgrounds = tmp_path / "bg"
    for index in range(3):
        write_jpeg(backgrounds / f"scene{index}.jpg", np.zeros((40, 30, 3), np.uint8))
    (backgrounds / "broken.jpg").write_bytes(b"")
    with pytest.raises(BadSample, match=r"broken.jpg"):
        find_matte_samples(foregrounds, alphas, backgrounds)
    scan = find_matte_samples(foregrounds, alphas, backgrounds, skip_bad=True)
    assert [s.sample_id for s in scan.samples] == ["p1", "p2"]
    assert scan.samples[0].foreground_path.name == "p1.png"
    assert [p.name for p in scan.backgrounds] == ["scene0.jpg", "scene1.jpg", "scene2.jpg"]
    assert scan.summary() == "2 samples, 1 quarantined, 3 backgrounds"


def test_natural_sort_is_total_and_deterministic():
    names = ["b10", "b2", "B2", "a", "b02", "10", "9"]
    ordered = sorted(names, key=natural_sort_key)
    assert ordered == sorted(list(reversed(names)), key=natural_sort_key)
    assert ordered.index("9") < ordered.index("10") and ordered.index("b2") < ordered.index("b10")


def test_list_images_and_scan_defaults(tmp_path):
    make_pairs(tmp_path, ["x"])
    assert [p.name for p in list_images(tmp_path / "images")] == ["x.jpg"]
    assert CorpusScan().summary() == "0 samples, 0 quarantined"
