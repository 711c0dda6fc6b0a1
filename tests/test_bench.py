"""``mlb bench``: every row family runs at tiny sizes and reports complete, consistent rows.

No test asserts a wall time: the figures depend on the machine and its load. What is checked
is that each row measures the real code, that its JSON has every field, that the verdict
follows from the ratio and the target, and that the command writes its JSON and markdown.
"""

import json
import math

import pytest
import torch

from mlb.cli import main
from mlb.experiments.bench import FAMILIES, TINY, BenchReport, BenchRow, render_markdown, run_bench
from mlb.experiments.bench.ddc import ddc_peak_memory
from mlb.experiments.bench.measure import interleaved, run_isolated
from mlb.experiments.bench.report import Figure, Target, busy_warning, judge, machine_info
from mlb.experiments.bench.workspace import Workspace

ROW_IDS = {"1": ["1"], "2": ["2"], "3": ["3a", "3b"], "4": ["4a", "4b", "4c"],
           "5": ["5a", "5b", "5c", "5d", "5e"], "6": ["6"], "7": ["7"],
           "8": ["8a", "8b", "8c", "8d"], "9": ["9a"], "10": ["10a", "10b", "10c", "10d"]}
ROW_FIELDS = {"id", "title", "compared", "figure_a", "figure_b", "ratio", "ratio_of", "target",
              "passed", "why", "method", "details", "seconds"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("bench"))


def _check_row(row: BenchRow) -> None:
    document = json.loads(json.dumps(row.model_dump(mode="json")))
    assert set(document) == ROW_FIELDS
    for figure in ("figure_a", "figure_b"):
        assert set(document[figure]) == {"name", "value", "unit"}
        assert math.isfinite(document[figure]["value"])
    assert BenchRow.model_validate(document) == row
    assert row.ratio is None or math.isfinite(row.ratio)
    assert row.passed == judge(row.ratio, row.target)
    if row.passed is not True:
        assert row.why, f"row {row.id} is not a pass but does not say why"
    assert row.method and row.seconds >= 0


@pytest.mark.parametrize("family", [f for f in FAMILIES if not f.needs_cuda],
                         ids=lambda family: family.key)
def test_each_row_family_runs_and_reports_every_field(family, workspace):
    rows = family.run(TINY, workspace)
    assert [row.id for row in rows] == ROW_IDS[family.key]
    for row in rows:
        _check_row(row)


@pytest.mark.gpu
def test_gpu_rows_run_on_cuda(workspace):
    from mlb.experiments.bench.gpu import bench_gpu

    rows = bench_gpu(TINY.gpu, workspace)
    assert [row.id for row in rows] == ROW_IDS["8"]
    for row in rows:
        _check_row(row)
    assert rows[0].details["device"].startswith("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without CUDA")
def test_gpu_family_is_skipped_without_cuda_and_says_so():
    report = run_bench(TINY, rows=["8"])
    assert report.rows == [] and report.skipped == {"8": "no CUDA device on this machine"}
    assert "row 8: no CUDA device" in render_markdown(report)


def test_unknown_rows_are_refused_with_the_options():
    with pytest.raises(ValueError, match="available options are 1, 2, 3"):
        run_bench(TINY, rows=["99"])


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    json_path, markdown_path = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["bench", "--preset", "tiny", "--rows", "3", "--json", str(json_path),
                 "--markdown", str(markdown_path), "--workdir", str(tmp_path / "work")])
    assert code == 0
    document = json.loads(json_path.read_text())
    assert {"preset", "command", "date", "machine", "seconds", "rows", "skipped"} <= set(document)
    assert document["preset"] == "tiny"
    assert document["command"].startswith("mlb bench --preset tiny --rows 3 --json")
    assert {"cpu", "cores", "torch", "onnxruntime", "torch_threads", "gpu"} <= set(
        document["machine"])
    assert [row["id"] for row in document["rows"]] == ["3a", "3b"]
    markdown = markdown_path.read_text()
    assert document["command"] in markdown and document["date"] in markdown
    assert "| 3a |" in markdown and "| 3b |" in markdown
    assert "| 3a |" in capsys.readouterr().out  # the table is printed too
    # An earlier run's JSON (the full sizes, in practice) is shown with its own time.
    again = tmp_path / "again.md"
    assert main(["bench", "--preset", "tiny", "--rows", "3", "--markdown", str(again),
                 "--full-report", str(json_path), "--quiet"]) == 0
    assert "## The tiny run" in again.read_text() and document["date"] in again.read_text()
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--preset", "tiny"])  # one size only


def test_cli_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": 3}')
    assert main(["bench", "--preset", "tiny", "--full-report", str(bad), "--quiet"]) == 2
    assert "is not an mlb bench report" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # --threads is checked by the parser now
        main(["bench", "--preset", "tiny", "--threads", "0", "--quiet"])
    assert stopped.value.code == 2
    assert "argument --threads: expected a positive integer, got '0'" in capsys.readouterr().err


def test_markdown_shows_each_verdict_and_why():
    def row(row_id, ratio, target, why=None):
        return BenchRow(id=row_id, title=f"row {row_id}", compared="a vs b",
                        figure_a=Figure(name="a", value=2.0, unit="img/s"),
                        figure_b=Figure(name="b", value=1.0, unit="img/s"), ratio=ratio,
                        target=target, passed=judge(ratio, target), why=why,
                        method=f"method {row_id}", details={}, seconds=1.0)

    rows = [row("1", 2.0, Target(op=">=", value=1.5)),
            row("2", 2.0, Target(op="<=", value=1.0), why="limited by the copy speed"),
            row("3", 2.0, None, why="reported")]
    report = BenchReport(preset="tiny", command="mlb bench", date="today",
                         machine=machine_info(), seconds=3.0, rows=rows)
    markdown = render_markdown(report)
    assert "| 1 | a vs b | a: 2 img/s | b: 1 img/s | 2 | >= 1.5 | pass |" in markdown
    assert "| 2 | a vs b | a: 2 img/s | b: 1 img/s | 2 | <= 1 | FAIL |" in markdown
    assert "| 3 | a vs b | a: 2 img/s | b: 1 img/s | 2 | - | reported |" in markdown
    assert "limited by the copy speed" in markdown
    assert report.counts == {"passed": 1, "failed": 1, "not_judged": 1}


def test_a_busy_machine_is_flagged_in_the_results():
    idle = {"usable_cores": 2, "load_average": [1.5, 1.0, 1.0], "load_average_end": [1.9]}
    busy = {**idle, "load_average_end": [5.2, 3.0, 2.0]}
    assert busy_warning(idle) is None
    assert "load average reached 5.2 on 2 cores" in busy_warning(busy)


def test_interleaved_alternates_the_order_of_calls():
    calls = []
    timings = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                          TINY.blend.timing.model_copy(update={"warmup": 1, "repeats": 4}))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(timing.seconds) for timing in timings.values()] == [4, 4]


def test_isolated_runs_measure_their_own_peak_and_report_failures():
    result = run_isolated(ddc_peak_memory, implementation="ddc_loss_unfold", batch=1, size=64)
    # 121 candidate colours of 64x64 pixels, 3 channels, float32: at least ~6 MB.
    assert result["peak_growth_bytes"] > 5e6
    with pytest.raises(RuntimeError, match="KeyError"):
        run_isolated(ddc_peak_memory, implementation="no-such-loss", batch=1, size=8)
