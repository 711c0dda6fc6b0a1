"""Contract of mlb.fileio.write_text_atomically and the JSON writers built on it, on real
files: a reader sees the old file or the new one, and no partial file is ever left behind."""

import json
import threading

import pytest

from mlb.fileio import write_text_atomically


def test_the_text_replaces_the_file_and_no_partial_remains(tmp_path):
    path = tmp_path / "record.json"
    write_text_atomically(path, "old\n")
    write_text_atomically(path, "new ✓\n")
    assert path.read_bytes() == "new ✓\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_partial(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):  # fails inside the partial's write
        write_text_atomically(path, "half \ud800 written")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_missing_folder_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text_atomically(tmp_path / "absent" / "record.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_threads_writing_one_path_never_share_a_partial(tmp_path):
    path = tmp_path / "report.json"

    def write_many(writer: int) -> None:
        for _ in range(100):
            write_text_atomically(path, json.dumps({"writer": writer}))

    threads = [threading.Thread(target=write_many, args=(writer,)) for writer in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert json.loads(path.read_text())["writer"] in (0, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_write_json_keeps_its_format_and_a_bad_value_keeps_the_old_file(tmp_path):
    from mlb.experiments.reproduce_data import write_json

    path = tmp_path / "work" / "data.json"  # parents are created
    write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    with pytest.raises(TypeError):
        write_json(path, {"not json": object()})
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.json"]


def test_the_training_summary_is_written_as_compact_pydantic_json(tmp_path):
    from mlb.train.config import TrainSummary
    from mlb.train.worker import _write_summary

    summary = TrainSummary(checkpoint="runs/student.pt", kind="student", steps=3,
                           finished=True, final_loss=0.25, seconds=1.5,
                           samples_per_second=2.0)
    path = tmp_path / "summary.json"
    _write_summary(summary, path)
    assert path.read_text(encoding="utf-8") == summary.model_dump_json()
    assert TrainSummary.model_validate_json(path.read_text()) == summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
