"""Run records: incremental writing, polars reading, old formats and crashed runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from kit.offline.runs import RecordFormatError, problems_frame, read_events, samples_frame
from kit.runtime.records import RECORD_VERSION, RunRecorder


def _write(path: Path) -> None:
    with RunRecorder(path) as rec:
        rec.write("run_start", problems=2)
        for pid in ("a", "b"):
            for i in range(3):
                rec.write("sample", problem_id=pid, index=i, text=f"t{i}", tokens=10 * i, answer=i,
                          code=[{"code": "print(1)", "status": "ok"}] * i, finish_reason="stop")
            rec.write("problem", problem_id=pid, answer=1, tally={"1": 2.0}, tokens=30)
        rec.write("run_end", summary={})


def test_every_event_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    rec = RunRecorder(path)
    rec.write("sample", problem_id="x", index=0)
    assert read_events(path, "sample")[0]["problem_id"] == "x"  # readable before close
    rec.close()
    rec.write("sample", problem_id="late")  # after close: ignored, no exception
    assert len(read_events(path)) == 1


def test_polars_frames(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    _write(path)
    samples = samples_frame(path)
    assert samples.height == 6
    assert samples["code_calls"].to_list() == [0, 1, 2, 0, 1, 2]
    assert samples.group_by("problem_id").agg(samples["tokens"].sum()).height == 2
    problems = problems_frame(path)
    assert problems["problem_id"].to_list() == ["a", "b"]
    assert json.loads(problems["tally"][0]) == {"1": 2.0}


def test_a_crashed_run_keeps_everything_before_the_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    _write(path)
    with path.open("a") as fh:
        fh.write('{"event": "sample", "version": 1, "text": "cut off mid')
    assert len(read_events(path, "sample")) == 6


def test_older_record_versions_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"event": "sample", "version": RECORD_VERSION - 1}) + "\n")
    with pytest.raises(RecordFormatError, match="older run format"):
        read_events(path)
    path.write_text(json.dumps({"event": "sample"}) + "\n")
    with pytest.raises(RecordFormatError, match="record version None"):
        read_events(path)
    with pytest.raises(FileNotFoundError, match="run records not found"):
        read_events(tmp_path / "none.jsonl")


def test_concurrent_writers_do_not_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with RunRecorder(path) as rec:
        def work(k: int) -> None:
            for i in range(200):
                rec.write("sample", problem_id=str(k), index=i, text="x" * 500)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(read_events(path, "sample")) == 800
