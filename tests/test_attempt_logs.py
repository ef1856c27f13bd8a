"""Other harnesses' attempt logs — Harmony token logs and attempt tables — read by `kit evaluate` and `kit
simulate` through the solver's own reader, with one-line errors naming the file, line (row) and field."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from kit.cli import main
from kit.offline.attempt_logs import AttemptLogError, parse_column_map
from kit.offline.budget import budget_curve
from kit.offline.finish_order import finish_order, finish_signal
from kit.offline.runs import EvalProblem, EvalSample, Run, load_pool_run
from kit.runtime.profiles import get_profile
from kit.runtime.protocols.harmony import HarmonyReader, read_completion
from kit.sim.harmony_logs import LogShape, harmony_log, write_attempt_table, write_harmony_log
from kit.sim.pools import load_pool_arg

SHAPE = LogShape(problems=5, attempts=8, bare_final_share=0.5, cut_share=0.1, seed=3)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return harmony_log(SHAPE)


@pytest.fixture(scope="module")
def log(rows, tmp_path_factory) -> Path:
    return write_harmony_log(tmp_path_factory.mktemp("log") / "attempts.jsonl", rows)


def test_the_generator_writes_every_real_ending(rows) -> None:
    ends = Counter(r["end"] for r in rows)
    assert set(ends) >= {"analysis_box", "boxed_final", "bare_final"}
    assert ends["analysis_box"] > ends["boxed_final"]  # most real attempts end at an analysis box
    assert sum(r["python_errors"] for r in rows) > 0


def test_a_harmony_log_is_read_as_its_harness_wrote_it(log, rows) -> None:
    run = load_pool_run(log)
    assert run.profile.name == "aimo3" and any("aimo3 assumed" in n for n in run.notes)
    samples = [s for p in run.problems for s in p.samples]
    assert len(run.problems) == SHAPE.problems and len(samples) == len(rows)
    by_problem = {p.problem_id: p for p in run.problems}
    for p in run.problems:
        assert p.gold == next(r["gold"] for r in rows if r["problem_id"] == p.problem_id)
    for r, s in zip(rows, [s for p in by_problem.values() for s in p.samples], strict=True):
        assert s.answer == r["answer"], (r["end"], s.text[-80:])  # bare finals and analysis boxes included
        assert (s.tokens, s.code_calls, s.code_errors) == (len(r["completion_ids"]), r["python_calls"],
                                                          r["python_errors"])
        assert s.finish_reason == ("length" if r["end"] == "cut" else "stop")
        assert (s.seconds, s.entropy_mean, s.entropy_tail) == (r["seconds"], r["entropy_mean"], r["entropy_tail"])
        assert "<|channel|>" in s.text


def test_a_log_that_keeps_the_assistant_header_reads_the_same(log, tmp_path: Path) -> None:
    from kit.runtime.protocols.harmony import assistant_header_ids

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for row in lines:
        row["completion_ids"] = list(assistant_header_ids()) + row["completion_ids"]
    other = tmp_path / "with-header.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in lines))
    answers = [[s.answer for s in p.samples] for p in load_pool_run(log).problems]
    assert [[s.answer for s in p.samples] for p in load_pool_run(other).problems] == answers


def test_the_same_ids_read_the_same_in_a_log_and_live() -> None:
    """One reader: what read_completion says of a log line is what the reader says of the stream."""
    for r in harmony_log(LogShape(problems=2, attempts=6, seed=9)):
        live = HarmonyReader()
        for k in range(0, len(r["completion_ids"]), 7):  # fed in chunks, as a stream arrives
            live.feed(r["completion_ids"][k : k + 7])
        reading = read_completion(r["completion_ids"])
        assert reading.answer == live.answer() and reading.python_calls == live.python_calls


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_attempt_table_with_other_column_names_is_read_through_the_map(rows, tmp_path: Path, suffix: str) -> None:
    table = write_attempt_table(tmp_path / f"attempts{suffix}", rows, {"gold": "ground_truth", "tokens": "total_tokens",
                                                                        "seconds": "time"})
    columns = parse_column_map("ground_truth=gold, total_tokens=tokens,time=seconds")
    run = load_pool_run(table, columns=columns)
    samples = [s for p in run.problems for s in p.samples]
    assert [s.answer for s in samples] == [r["answer"] for r in rows]
    assert [s.tokens for s in samples] == [len(r["completion_ids"]) for r in rows]
    assert [s.seconds for s in samples] == [r["seconds"] for r in rows]
    assert samples[0].entropy_mean == rows[0]["entropy_mean"]
    with pytest.raises(AttemptLogError, match=r"missing column\(s\) \['gold', 'tokens'\]"):
        load_pool_run(table)


def test_evaluate_and_simulate_read_both_formats(log, rows, tmp_path: Path) -> None:
    table = write_attempt_table(tmp_path / "t.csv", rows, {"gold": "ground_truth"})
    out = tmp_path / "ev.json"
    assert main(["evaluate", "--pool", str(log), "--pool", str(table), "--map", "ground_truth=gold",
                 "--out", str(tmp_path / "ev"), "--json", str(out), "--boot", "50"]) == 0
    ev = json.loads(out.read_text())
    pass1 = {m["run"]: m["pass@1"] for m in ev["metrics"]}
    expected = sum(r["answer"] == r["gold"] for r in rows) / len(rows)
    assert pass1["attempts"] == pytest.approx(expected) and pass1["t"] == pytest.approx(expected)
    recorded = {m["run"]: m["recorded pass@1"] for m in ev["metrics"]}
    assert recorded == {"attempts": None, "t": pytest.approx(expected)}  # the harness's verdicts agree
    assert {f["run"] for f in ev["finish_order"]} == {"attempts", "t"}
    assert "What finishing first says" in (tmp_path / "ev" / "report.md").read_text()
    sim = tmp_path / "sim.json"
    assert main(["simulate", "--pool", str(log), "--runs", "3", "--json", str(sim),
                 "--plot", str(tmp_path / "s.png")]) == 0
    table_rows = json.loads(sim.read_text())
    assert {r["policy"] for r in table_rows} >= {"ours", "aimo3_baseline", "oracle"}
    assert all(r["penalized_score"] is not None for r in table_rows)  # read as AIMO3: runs twice
    pool = load_pool_arg(str(table), "aimo3", columns={"ground_truth": "gold"})
    assert sorted(a for p in pool for a, _ in p.samples if a is not None) == sorted(
        r["answer"] for r in rows if r["answer"] is not None)


BAD_LINES = {
    "ids": ({"completion_ids": [200005, "x"]}, "field 'completion_ids' must be a list of token ids, got 'x'"),
    "gold": ({"gold": [1]}, "field 'gold' must be an integer or null"),
    "missing": ({"problem": None}, "field 'problem' must be a string"),
    "entropy": ({"entropy_mean": -1}, "field 'entropy_mean' must be a non-negative number"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_bad_log_line_is_one_error_naming_file_line_and_field(log, tmp_path: Path, case: str, capsys) -> None:
    change, message = BAD_LINES[case]
    lines = log.read_text().splitlines()
    row = json.loads(lines[2]) | change
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:2], json.dumps(row), *lines[3:]]) + "\n")
    with pytest.raises(AttemptLogError, match=f"{bad}:3: {message}".replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        load_pool_run(bad)
    assert main(["evaluate", "--pool", str(bad), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}:3: ")


def test_a_bad_table_row_is_one_error_naming_file_row_and_column(rows, tmp_path: Path) -> None:
    table = write_attempt_table(tmp_path / "t.csv", rows)
    text = table.read_text().splitlines()
    cells = text[4].split(",")
    cells[3] = "lots"  # tokens
    table.write_text("\n".join([*text[:4], ",".join(cells), *text[5:]]) + "\n")
    with pytest.raises(AttemptLogError, match=rf"{table}: row 4: field 'tokens' must be an integer >= 0, got 'lots'"):
        load_pool_run(table)
    with pytest.raises(ValueError, match="--map: 'gold' is not OLD=NEW"):
        parse_column_map("gold")


def test_a_harmony_logs_budget_curve_re_reads_the_cut_ids(log, rows) -> None:
    run = load_pool_run(log)
    shortest = min(len(r["completion_ids"]) for r in rows)
    curve = budget_curve(run, [shortest // 2, 10**6])
    low, full = curve.to_dicts()
    assert full["cut"] == 0 and full["pass@1"] == pytest.approx(
        sum(r["answer"] == r["gold"] for r in rows) / len(rows))
    assert low["cut"] == 1 and low["no_answer"] > 0.9  # half an attempt has not reached its box yet
    prof = get_profile("aimo3")
    for p in run.problems[:2]:
        for s in p.samples[:3]:
            ids = run.logged[(p.problem_id, s.index)].ids.tolist()
            at = run.logged[(p.problem_id, s.index)].answers_at([10, len(ids) - 1], prof)
            for b, a in zip([10, len(ids) - 1], at, strict=True):
                reader = HarmonyReader()  # a cut attempt is read as the solver reads one cut by max tokens
                reader.feed(ids[:b])
                raw = reader.answer()
                assert a == (None if raw is None else prof.to_answer(raw))


def _problem(pid: str, gold: int, attempts: list[tuple[int | None, int]]) -> EvalProblem:
    samples = [EvalSample(index=i, text="", tokens=t, answer=a, finish_reason="stop") for i, (a, t) in enumerate(attempts)]
    return EvalProblem(pid, "", gold, None, samples, sum(t for _, t in attempts))


def test_finish_order_tells_an_inverted_model_from_an_r1_like_one() -> None:
    """gpt-oss-like: the shortest attempts are wrong (quick wrong guesses), right ones a little shorter than
    the rest; R1-like: right attempts are the short ones."""
    inverted = [_problem(f"i{k}", 5, [(9, 1000), (5, 3000), (5, 3100), (5, 3200), (7, 3500)]) for k in range(20)]
    r1 = [_problem(f"r{k}", 5, [(5, 1000), (5, 1200), (8, 4000), (9, 5000), (5, 1500)]) for k in range(20)]
    prof = get_profile("aimo3")
    bad = finish_order(Run("gpt-oss-like", "pool", "", prof, inverted), n_boot=200)
    good = finish_order(Run("r1-like", "pool", "", prof, r1), n_boot=200)
    assert bad.first_finish == 0.0 and bad.random == pytest.approx(0.6) and bad.diff_high < 0
    assert bad.verdict == "short attempts are wrong more often"
    assert good.first_finish == 1.0 and good.diff_low > 0 and good.length_ratio == pytest.approx(4500 / 1200)
    assert finish_signal([(p.gold, [(s.answer, s.tokens) for s in p.samples]) for p in inverted]) == pytest.approx(-0.6)
