"""The reproduction grid and the domain-gap measurement, end to end at toy size."""

import json

import pytest

from mlb.cli import main
from mlb.experiments.reproduce import BLENDED_ROWS, COLUMNS, DOMAINS, LABEL_ROWS, PRESETS
from mlb.experiments.reproduce import ROWS as PAPER_ROWS
from mlb.experiments.reproduce_networks import network_rows

# the paper's rows and, per other network (MODNet), teacher-style vs MLB student
ROWS = {**PAPER_ROWS, **network_rows(PRESETS["tiny"])}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("reproduce")
    args = ["reproduce", "paper", "--preset", "tiny", "--work", str(work / "run"),
            "--json", str(work / "report.json"), "--markdown", str(work / "table.md"),
            "--quiet"]
    assert main(args) == 0
    return work, args


def test_every_row_is_trained_and_scored(paper_run):
    work, _ = paper_run
    report = json.loads((work / "report.json").read_text())
    assert set(report["per_seed"]["0"]) == set(ROWS)
    for row in ROWS:
        for column in COLUMNS:
            assert report["mean"][row][column] >= 0.0
    table = (work / "table.md").read_text()
    for label in ROWS.values():
        assert f"| {label} |" in table
    assert "Command: `mlb reproduce paper --preset tiny`" in table
    assert {"modnet_teacher", "modnet_mlb"} <= set(ROWS)
    assert report["whole_mse_gain"] == pytest.approx(
        1 - report["mean"]["mlb"]["mse"] / report["mean"]["teacher"]["mse"])


def test_the_labels_the_students_learn_from_are_scored(paper_run):
    work, _ = paper_run
    report = json.loads((work / "report.json").read_text())
    labels = report["labels_per_seed"]["0"]
    assert set(labels) == set(LABEL_ROWS)
    for row in LABEL_ROWS:
        assert all(labels[row][column] >= 0.0 for column in COLUMNS)
    # Each blended row reports where the blend took the teacher; b is a probability.
    for row in BLENDED_ROWS:
        assert 0.0 <= labels[row]["b_boundary"] <= 1.0
        assert 0.0 <= labels[row]["b_elsewhere"] <= 1.0
    table = (work / "table.md").read_text()
    for label in LABEL_ROWS.values():
        assert f"| {label} |" in table


def test_the_ema_round_records_its_lineage(paper_run):
    from storage import LabelStore

    work, _ = paper_run
    store = LabelStore(work / "run" / "seed-0" / "labels")
    rounds = {info.version_id: store.open_version(info.version_id).metadata["lineage"]
              for info in store.versions()}
    ema = [lineage for lineage in rounds.values() if lineage["ema_round"] == 1]
    assert ema, rounds
    assert all(lineage["parent_version"] in rounds for lineage in ema)


def test_a_rerun_reuses_finished_work_and_scores_the_same(paper_run, capsys):
    work, args = paper_run
    first = json.loads((work / "report.json").read_text())
    checkpoints = {p: p.stat().st_mtime_ns for p in (work / "run").rglob("*.pt")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (work / "run").rglob("*.pt")} == checkpoints
    second = json.loads((work / "report.json").read_text())
    assert second["per_seed"] == first["per_seed"]


def test_domain_gap_scores_both_domains(paper_run):
    work, _ = paper_run
    assert main(["reproduce", "domain-gap", "--preset", "tiny", "--work", str(work / "run"),
                 "--json", str(work / "gap.json"), "--quiet"]) == 0
    report = json.loads((work / "gap.json").read_text())
    assert set(report["mean"]) == set(DOMAINS)
    assert report["mse_ratio"] == pytest.approx(
        report["mean"]["natural"]["mse"] / report["mean"]["composite"]["mse"])


def test_an_unknown_preset_is_a_clear_error(tmp_path, capsys):
    assert main(["reproduce", "paper", "--preset", "huge", "--work", str(tmp_path)]) == 2
    assert "available options are tiny, cpu" in capsys.readouterr().err
