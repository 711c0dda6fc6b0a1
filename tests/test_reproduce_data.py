"""`mlb reproduce` on the user's own folders: real photos, oddly named folders, bad folders.

The natural corpus is six real photos of ../shared/data/human-seg-290 (one of them with its
mask stored at another resolution, as 198 of the 290 are), the matte corpus and the
validation set are drawn by mlb.data.synth into folders that are not the built-in layout.
The photos have no true alpha; a blurred copy of each mask stands in for it, so that the
label table and the oracle row run (their values are not a finding).
"""

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mlb.cli import main
from mlb.data.imageio import read_alpha, read_mask, write_jpeg, write_png
from mlb.data.synth import render_composite_sample, render_natural_sample
from mlb.experiments.reproduce import BOUND_ROWS, PRESETS, ROWS, plan
from mlb.metrics import matting_metrics, mean_metrics

PHOTOS = ("1", "2", "3", "4", "5", "100")  # 100.png is stored at 454x551 for a 1055x1280 photo


def _own_data(root, photos_root):
    """Write the three corpora under ``root``; returns the CLI's data options."""
    folders = {name: root / name for name in (
        "my photos", "seg labels", "soft labels", "Foregrounds", "mattes", "plates",
        "held-out", "held-out alpha", "held-out masks")}
    folders["my photos"].mkdir()
    folders["seg labels"].mkdir()
    for stem in PHOTOS:
        shutil.copy(photos_root / "Training_Images" / f"{stem}.jpg",
                    folders["my photos"] / f"shot_{stem}.jpg")
        shutil.copy(photos_root / "Ground_Truth" / f"{stem}.png",
                    folders["seg labels"] / f"shot_{stem}.png")
        image = cv2.imread(str(photos_root / "Training_Images" / f"{stem}.jpg"))
        mask = read_mask(photos_root / "Ground_Truth" / f"{stem}.png", size=image.shape[:2])
        write_png(folders["soft labels"] / f"shot_{stem}.png",
                  cv2.GaussianBlur(mask, (0, 0), 2.0))
    for index in range(4):
        sample = render_composite_sample(7, index, 48)
        write_png(folders["Foregrounds"] / f"person-{index}.png", sample["foreground"])
        write_png(folders["mattes"] / f"person-{index}.png", sample["alpha"])
        write_jpeg(folders["plates"] / f"plate_{index}.jpg", sample["background"])
    for index in range(3):
        sample = render_natural_sample(9, index, 56)
        write_jpeg(folders["held-out"] / f"val{index}.jpg", sample["image"])
        write_png(folders["held-out alpha"] / f"val{index}.png", sample["alpha"])
        write_png(folders["held-out masks"] / f"val{index}.png", sample["coarse_mask"])
    options = ["--matte-fg", folders["Foregrounds"], "--matte-alpha", folders["mattes"],
               "--matte-bg", folders["plates"],
               "--natural", folders["my photos"], folders["seg labels"], folders["soft labels"],
               "--validation", folders["held-out"], folders["held-out alpha"],
               folders["held-out masks"]]
    return folders, [str(option) for option in options]


def _sha256(folder):
    """An independent folder hash: name and bytes of each file, in natural (numeric) order."""
    digest = hashlib.sha256()
    files = sorted(folder.iterdir(), key=lambda path: [
        int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)])
    for path in files:
        digest.update(f"{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n"
                      .encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, human_seg_290):
    root = tmp_path_factory.mktemp("own data")
    folders, options = _own_data(root, human_seg_290)
    work = root / "work"
    args = ["reproduce", "paper", "--preset", "tiny", "--threads", "1", "--work", str(work),
            "--json", str(root / "report.json"), "--markdown", str(root / "table.md"),
            "--quiet", *options]
    assert main(args) == 0
    return root, folders, args


@pytest.mark.slow
def test_the_report_records_the_users_folders_and_their_hashes(own_run):
    root, folders, _ = own_run
    report = json.loads((root / "report.json").read_text())
    corpora = report["data"]["corpora"]
    assert {name: corpora[name]["source"] for name in corpora} == {
        "matte": "user", "natural": "user", "validation": "user"}
    expected = {"matte": {"fg": "Foregrounds", "alpha": "mattes", "bg": "plates"},
                "natural": {"images": "my photos", "masks": "seg labels",
                            "alphas": "soft labels"},
                "validation": {"images": "held-out", "alphas": "held-out alpha",
                               "masks": "held-out masks"}}
    for name, roles in expected.items():
        for role, folder in roles.items():
            assert corpora[name]["folders"][role] == str(folders[folder].resolve())
            assert corpora[name]["sha256"][role] == _sha256(folders[folder])
    assert corpora["natural"]["files"] == {"images": 6, "masks": 6, "alphas": 6}
    table = (root / "table.md").read_text()
    assert "natural (user): images `" + str(folders["my photos"].resolve()) in table
    # the command that reproduces the table, with every folder quoted for the shell
    assert f"--natural {shlex.quote(str(folders['my photos']))} " in table
    assert f"--matte-fg {shlex.quote(str(folders['Foregrounds']))} " in table


@pytest.mark.slow
def test_the_oracle_and_coarse_mask_rows_are_scored(own_run, human_seg_290):
    root, folders, _ = own_run
    report = json.loads((root / "report.json").read_text())
    assert set(report["rows"]) >= {*ROWS, *BOUND_ROWS}
    assert list(report["rows"])[len(ROWS):len(ROWS) + 2] == list(BOUND_ROWS)
    for row in ("oracle", "coarse_mask"):
        assert report["mean"][row]["mse"] > 0.0
        assert f"| {report['rows'][row]} |" in (root / "table.md").read_text()
    # The coarse-mask row is the validation masks scored against the true alphas.
    scores = []
    for index in range(3):
        truth = read_alpha(folders["held-out alpha"] / f"val{index}.png")
        mask = read_mask(folders["held-out masks"] / f"val{index}.png", size=truth.shape)
        scores.append(matting_metrics(mask, truth))
    expected = mean_metrics(scores)
    for column in ("mse", "mse_boundary", "sad", "sad_boundary"):
        assert report["mean"]["coarse_mask"][column] == pytest.approx(expected[column])
    # The oracle trained on the natural photos' alphas, with the student's network.
    checkpoint = root / "work" / "seed-0" / "oracle.pt"
    assert checkpoint.is_file()
    assert report["second_round"] == "ema" and report["labels_per_seed"]["0"]


@pytest.mark.slow
def test_a_work_folder_refuses_other_data(own_run, capsys):
    _, folders, args = own_run
    photo = folders["my photos"] / "shot_1.jpg"
    original = photo.read_bytes()
    try:
        photo.write_bytes(original + b"edited")  # other bytes, the same name
        assert main(args) == 2
    finally:
        photo.write_bytes(original)
    error = capsys.readouterr().err.strip()
    assert error.startswith("mlb reproduce: error: ") and "started on other data" in error
    assert "natural images" in error and "\n" not in error


def test_without_alphas_the_oracle_row_is_left_out():
    from mlb.experiments.reproduce import paper_rows

    config = PRESETS["tiny"]
    assert "oracle" not in paper_rows(config, oracle=False)
    assert "oracle" not in {run.row for run in plan(config, oracle=False)}
    assert "oracle" in {run.row for run in plan(config, oracle=True)}


def _bad(tmp_path, human_seg_290, change):
    """Good folders with one change; returns the CLI's data options."""
    folders, options = _own_data(tmp_path, human_seg_290)
    return change(folders, options) or options


def _mask_of_another_shape(folders, options):
    write_png(folders["seg labels"] / "shot_1.png", np.zeros((40, 40), np.uint8))


def _unpaired(folders, options):
    (folders["seg labels"] / "shot_2.png").unlink()


def _empty(folders, options):
    for path in folders["held-out"].iterdir():
        path.unlink()


def _missing(folders, options):
    shutil.rmtree(folders["mattes"])


def _alpha_of_another_size(folders, options):
    write_png(folders["held-out alpha"] / "val0.png", np.zeros((30, 56), np.uint8))


def _no_backgrounds(folders, options):
    for path in folders["plates"].iterdir():
        path.unlink()


def _truncated_photo(folders, options):
    photo = folders["my photos"] / "shot_3.jpg"
    photo.write_bytes(photo.read_bytes()[:1200])  # the header reads, the pixels do not


def _truncated_validation_image(folders, options):
    image = folders["held-out"] / "val1.jpg"
    image.write_bytes(image.read_bytes()[:700])


def _one_natural_folder(folders, options):
    start = options.index("--natural")
    del options[start + 2:start + 4]


def _half_a_matte(folders, options):
    start = options.index("--matte-alpha")
    del options[start:start + 4]


@pytest.mark.parametrize(("change", "expected"), [
    (_mask_of_another_shape, "--natural (images, masks): "),
    (_unpaired, "no mask with stem 'shot_2'"),
    (_empty, "--validation (images, alphas): no images in"),
    (_missing, "--matte: "),
    (_alpha_of_another_size, "--validation (images, alphas): "),
    (_no_backgrounds, "--matte: no backgrounds in"),
    (_truncated_photo, "--natural: "),
    (_truncated_validation_image, "--validation: "),
    (_one_natural_folder, "--natural takes IMAGES MASKS [ALPHAS], got 1 folder(s)"),
    (_half_a_matte, "missing: --matte-alpha, --matte-bg"),
])
def test_bad_folders_end_in_one_clear_line(tmp_path, human_seg_290, capsys, change,
                                           expected):
    options = _bad(tmp_path, human_seg_290, change)
    work = tmp_path / "work"
    assert main(["reproduce", "paper", "--preset", "tiny", "--work", str(work), "--quiet",
                 *options]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("mlb reproduce: error: ") and "\n" not in error
    assert expected in error, error
    assert not (work / "seed-0").exists()  # nothing trained
    assert not (work / "data" / "composite").exists()  # nothing generated either


def test_domain_gap_on_your_own_matte_needs_its_composite_validation(tmp_path, human_seg_290,
                                                                     capsys):
    _, options = _own_data(tmp_path, human_seg_290)
    start = options.index("--natural")
    del options[start:start + 4]  # domain-gap reads no natural corpus
    assert main(["reproduce", "domain-gap", "--preset", "tiny", "--work",
                 str(tmp_path / "work"), "--quiet", *options]) == 2
    assert "needs --composite-validation IMAGES ALPHAS" in capsys.readouterr().err


@pytest.mark.slow
def test_domain_gap_runs_on_your_own_matte_and_composite_validation(own_run):
    from mlb.data.compositing import composite

    root, folders, _ = own_run
    images, alphas = root / "comp val", root / "comp val alpha"
    for index in range(3):  # foregrounds the matte corpus does not hold
        sample = render_composite_sample(11, index, 48)
        write_png(images / f"c{index}.png", composite(sample["foreground"], sample["alpha"],
                                                      sample["background"]))
        write_png(alphas / f"c{index}.png", sample["alpha"])
    assert main(["reproduce", "domain-gap", "--preset", "tiny", "--threads", "1",
                 "--work", str(root / "gap"), "--json", str(root / "gap.json"), "--quiet",
                 "--matte", str(root / "work" / "data" / "matte-view"),
                 "--validation", str(folders["held-out"]), str(folders["held-out alpha"]),
                 "--composite-validation", str(images), str(alphas)]) == 0
    report = json.loads((root / "gap.json").read_text())
    corpora = report["data"]["corpora"]
    assert set(corpora) == {"matte", "validation", "composite_validation"}
    assert corpora["composite_validation"]["sha256"]["images"] == _sha256(images)
    # --matte DIR read through the view of links: the hash is the linked folder's content
    assert corpora["matte"]["sha256"]["fg"] == _sha256(folders["Foregrounds"])
    assert report["mean"]["composite"]["mse"] > 0 and report["mean"]["natural"]["mse"] > 0


def test_a_work_folder_of_another_presets_built_in_data_is_refused(tmp_path, capsys):
    from mlb.experiments.reproduce_data import ReproduceData, prepare_corpora

    prepare_corpora(ReproduceData(), PRESETS["tiny"].built_in(), tmp_path / "work" / "data",
                    composite_validation=False)
    assert main(["reproduce", "paper", "--preset", "cpu", "--work", str(tmp_path / "work"),
                 "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert ("was generated with {'count': 8, 'size': 48, 'seed': 0, 'backgrounds': "
            "'patterns'}") in error, error
    assert "this preset needs {'count': 120, 'size': 96, 'seed': 0, 'backgrounds'" in error


def test_the_composite_background_pool_is_part_of_the_built_in_data(tmp_path):
    from mlb.experiments.reproduce_data import ReproduceData, prepare_corpora

    tiny = PRESETS["tiny"]
    scenes = tiny.model_copy(update={"composite_backgrounds": "scenes"})
    assert "composite_backgrounds" not in tiny.built_in()  # earlier records stay equal
    assert scenes.built_in()["composite_backgrounds"] == "scenes"
    root = tmp_path / "data"
    corpora = prepare_corpora(ReproduceData(), scenes.built_in(), root,
                              composite_validation=True)
    for folder in (corpora.matte, root / "composite-validation"):
        assert json.loads((Path(folder) / "synth.json").read_text())["backgrounds"] == "scenes"
    with pytest.raises(ValueError, match=r"'backgrounds': 'scenes'\}, this preset needs .*"
                                         r"'backgrounds': 'patterns'\}"):
        prepare_corpora(ReproduceData(), tiny.built_in(), root, composite_validation=False)
    # A manifest written before pools existed is a "patterns" corpus, reused as one.
    old = tmp_path / "old"
    prepare_corpora(ReproduceData(), tiny.built_in(), old, composite_validation=False)
    manifest = old / "composite" / "synth.json"
    record = json.loads(manifest.read_text())
    del record["backgrounds"]
    manifest.write_text(json.dumps(record))
    prepare_corpora(ReproduceData(), tiny.built_in(), old, composite_validation=False)
    with pytest.raises(ValueError, match=r"'backgrounds': 'patterns'\}, this preset needs"):
        prepare_corpora(ReproduceData(), scenes.built_in(), old, composite_validation=False)


def _photos_with_masks(root, human_seg_290, count):
    """The first ``count`` real photos and their masks, in two folders: no alphas."""
    photos, masks = root / "photos", root / "masks"
    photos.mkdir(), masks.mkdir()
    for stem in PHOTOS[:count]:
        shutil.copy(human_seg_290 / "Training_Images" / f"{stem}.jpg", photos)
        shutil.copy(human_seg_290 / "Ground_Truth" / f"{stem}.png", masks)
    return photos, masks


@pytest.mark.slow
def test_photos_with_masks_only_run_without_the_oracle_and_label_table(tmp_path,
                                                                       human_seg_290):
    photos, masks = _photos_with_masks(tmp_path, human_seg_290, 3)
    assert main(["reproduce", "paper", "--preset", "tiny", "--threads", "1", "--work",
                 str(tmp_path / "work"), "--json", str(tmp_path / "report.json"), "--quiet",
                 "--natural", str(photos), str(masks)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert "oracle" not in report["rows"] and "coarse_mask" in report["rows"]  # built-in val
    assert report["labels_per_seed"] == {} and "Labels not scored" in report["labels_table"]
    assert not (tmp_path / "work" / "seed-0" / "oracle.pt").exists()
    assert report["data"]["corpora"]["natural"]["folders"] == {
        "images": str(photos.resolve()), "masks": str(masks.resolve())}
    assert report["data"]["corpora"]["validation"]["source"] == "built-in"


def test_a_row_the_data_cannot_give_is_refused_before_training(tmp_path, human_seg_290,
                                                               capsys):
    photos, masks = _photos_with_masks(tmp_path, human_seg_290, 2)
    work = tmp_path / "work"
    for extra in (["--plan"], ["--work", str(work), "--quiet"]):
        capsys.readouterr()
        assert main(["reproduce", "paper", "--preset", "tiny", "--rows", "mlb,oracle",
                     "--natural", str(photos), str(masks), *extra]) == 2
        err = capsys.readouterr().err
        assert err.strip() == (
            "mlb reproduce: error: --rows: oracle needs the natural corpus's true alpha "
            "(--natural IMAGES MASKS ALPHAS), which this run was not given"), err
    assert not list(work.rglob("*.pt"))


def test_runs_of_other_seeds_in_one_work_folder_prepare_the_data_one_at_a_time(tmp_path,
                                                                                caplog):
    """One process per seed is the documented way to spread seeds over cores; they share the
    work folder's data. A run waits while another holds the data lock (no half-generated
    corpus is hashed, no half-written data.json read), then finds the data ready."""
    import threading

    from mlb.experiments.reproduce import _prepare
    from mlb.experiments.reproduce_data import ReproduceData
    from mlb.labels.store import file_lock

    caplog.set_level("INFO", logger="mlb.experiments.reproduce")
    config = PRESETS["tiny"].model_copy(update={"work": str(tmp_path / "work")})
    finished: list[object] = []

    def prepare() -> None:
        finished.append(_prepare(config, ReproduceData(), ("matte", "natural", "validation"),
                                 composite_validation=False))

    with file_lock(str(tmp_path / "work" / "data.lock"), what="test", timeout_s=1):
        waiting = threading.Thread(target=prepare)
        waiting.start()
        waiting.join(timeout=3)
        assert waiting.is_alive() and not finished
        assert not (tmp_path / "work" / "data").exists()
        assert "waiting (up to 60 min) for another run to prepare the data" in caplog.text
    waiting.join(timeout=120)
    assert len(finished) == 1
    record = json.loads((tmp_path / "work" / "data.json").read_text())
    assert set(record) == {"matte", "natural", "validation"}
    assert not list((tmp_path / "work").glob("*.partial"))
    prepare()  # the second seed's run: same data, same record
    assert json.loads((tmp_path / "work" / "data.json").read_text()) == record


@pytest.mark.parametrize("content", ["[]", "null", '{"natural": 1}', '{"natural": {"images": 5}}'])
def test_a_data_record_of_the_wrong_shape_is_one_line(tmp_path, capsys, content):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.json").write_text(content)
    assert main(["reproduce", "paper", "--preset", "tiny", "--work", str(work), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("remove it if the work folder's data are what this run reads"), error
    assert "not a data record" in error and len(error.splitlines()) == 1
    assert (work / "data.json").read_text() == content  # kept for the user to look at


@pytest.mark.parametrize("obstacle", ["data.json", "data.lock"])
def test_a_folder_where_the_work_folders_files_belong_is_named(tmp_path, capsys, obstacle):
    work = tmp_path / "work"
    (work / obstacle).mkdir(parents=True)
    assert main(["reproduce", "paper", "--preset", "tiny", "--work", str(work), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith(f"{work / obstacle}; a folder is where a file is expected: give a "
                          "file path"), error
    assert "--store" not in error and not list(work.glob("*.partial"))


def test_reports_written_together_by_two_processes_never_collide(tmp_path):
    """Seeds' runs in one work folder finish at any time; each writes report.json."""
    import multiprocessing

    from mlb.experiments.reproduce_data import write_json

    path = tmp_path / "report.json"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.starmap(_write_many, [(str(path), 0), (str(path), 1)])
    assert json.loads(path.read_text())["writer"] in (0, 1)
    assert not list(tmp_path.glob("*.partial"))
    write_json(path, {"writer": 2})
    assert json.loads(path.read_text()) == {"writer": 2}


def _write_many(path: str, writer: int) -> None:
    from pathlib import Path

    from mlb.experiments.reproduce_data import write_json

    for _ in range(200):
        write_json(Path(path), {"writer": writer})


@pytest.mark.parametrize("text, reason", [
    ("[1, 2]", "a JSON list, not an object"), ("{not json", "Expecting property name"),
    ("[" * 100_000 + "]" * 100_000, "recursion")])
def test_a_tampered_manifest_is_named_not_a_traceback(tmp_path, text, reason):
    from mlb.experiments.reproduce_data import ReproduceData, prepare_corpora

    built_in = PRESETS["tiny"].built_in()
    prepare_corpora(ReproduceData(), built_in, tmp_path, composite_validation=False)
    (tmp_path / "composite" / "synth.json").write_text(text)
    with pytest.raises(ValueError, match=r"composite/synth.json: not a synth manifest \(.*"
                                         f"{reason}.*give another --work"):
        prepare_corpora(ReproduceData(), built_in, tmp_path, composite_validation=False)
