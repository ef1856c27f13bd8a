"""Trace loading: the bundled pools and clear errors for bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from kit.offline.traces import TraceFormatError, load_pool, load_samples, trace_files


def test_bundled_pools_load() -> None:
    sky = load_pool("skythought_aime24")
    assert len(sky) == 11 * 30
    assert len({s.problem_id for s in sky}) == 30
    assert {type(s.recorded_correct) for s in sky} == {bool}  # the harness graded every sample
    assert 0 < sum(s.recorded_correct for s in sky) < len(sky)
    tora = load_pool("tora_gsm8k")
    assert len(tora) == 2 * 1319
    nemo = load_pool("nemoskills")
    assert len(nemo) == 150


def test_plain_and_gzip_files(tmp_path: Path) -> None:
    line = {"id": "p1", "problem": "1+1?", "expected_answer": "2", "generation": r"\boxed{2}",
            "predicted_answer": "2", "symbolic_correct": True}
    plain = tmp_path / "a.jsonl"
    plain.write_text(json.dumps(line) + "\n\n")
    packed = tmp_path / "b.jsonl.gz"
    with gzip.open(packed, "wt") as fh:
        fh.write(json.dumps(line) + "\n")
    a, b = load_samples(plain), load_samples(packed)
    assert len(a) == len(b) == 1
    assert (a[0].text, a[0].gold, a[0].recorded_correct) == (b[0].text, b[0].gold, b[0].recorded_correct) == (r"\boxed{2}", "2", True)
    assert [p.name for p in trace_files(tmp_path)] == ["a.jsonl", "b.jsonl.gz"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "a.jsonl:1: not JSON"),
        ("[1, 2]\n", "a.jsonl:1: expected a JSON object"),
        ('{"foo": 1}\n', "a.jsonl:1: unknown trace layout"),
        ('{"idx": 0, "gt": "1", "code": ["a", "b"], "pred": ["1"]}\n', "must be lists of equal length"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(content)
    with pytest.raises(TraceFormatError, match=message):
        load_samples(path)


def test_missing_paths_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="trace file not found"):
        load_samples(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="no such bundled pool"):
        trace_files("nope-pool")
    with pytest.raises(FileNotFoundError, match=r"no \.jsonl"):
        trace_files(tmp_path)
