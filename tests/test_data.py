"""Data curation (kit.learn.data, training.curate): loaders, decontamination, dedup, selection, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from kit.learn.data import (
    DataError,
    DropReport,
    contamination,
    curate,
    format_assistant,
    load_any,
    load_eval_sets,
    load_messages,
    load_openr1,
    load_problem_file,
    near_duplicates,
    problem_stats,
    shortest_correct,
    verify,
)
from kit.runtime.config import ConfigError, load_yaml

SYNTH = [
    "Find the number of ordered pairs of positive integers whose product is a perfect square less than 500.",
    "A circle of radius 7 is inscribed in a right triangle with hypotenuse 50. Find the triangle's perimeter.",
    "How many subsets of the set of the first twelve positive integers contain no two consecutive numbers?",
]


def _edit(text: str) -> str:
    return "  " + text.replace(" ", "  ", 3).upper().replace("\\", "\\") + " \n"


def _frame(problems: list[str], answers: list[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame({"id": [str(i) for i in range(len(problems))], "problem": problems,
                         "answer": answers or ["1"] * len(problems)})


def _aime24() -> list[str]:
    return load_eval_sets(["aime24"])["aime24"]


def test_decontamination_removes_injected_aime24_synthetic() -> None:
    evals = load_eval_sets()
    injected = [_edit(p) for p in _aime24()[:3]]
    hits = contamination(SYNTH + injected, evals)
    assert hits == [None, None, None, "aime24", "aime24", "aime24"]


def test_decontamination_on_deepscaler() -> None:
    train = load_problem_file("aime_1983_2023")["problem"].to_list()
    assert len(train) == 975
    injected = [_edit(p) for p in _aime24()[5:8]]
    hits = contamination(train + injected, {"aime24": _aime24()})
    assert hits[-3:] == ["aime24"] * 3
    assert sum(h is not None for h in hits[:-3]) <= 5  # AIME 1983-2023 vs 2024: (almost) no overlap


def test_default_curate_config_decontaminates_against_bundled_amc23_and_math500() -> None:
    """The shipped config names only bundled sets: it works on a user's machine, with every set loaded."""
    from training.curate import CurateConfig

    cfg = load_yaml(CurateConfig, "training/configs/curate.yaml")
    assert cfg.extra_eval_sets == []
    evals = load_eval_sets(cfg.eval_sets)
    assert len(evals["amc23"]) == 40 and len(evals["math500"]) == 500
    injected = [_edit(evals["amc23"][3]), _edit(evals["math500"][7])]
    assert contamination(SYNTH + injected, evals)[-2:] == ["amc23", "math500"]


def test_dedup_exact_and_near() -> None:
    base = SYNTH[0] + " Express your answer as an integer and justify every single step of the argument."
    near = base.replace("the argument.", "the argument carefully.")
    out = near_duplicates([base, SYNTH[1], _edit(base), near, SYNTH[2]])
    assert out[0] is None and out[1] is None and out[4] is None
    assert out[2] == ("exact", 0)
    assert out[3] == ("near", 0)


def _gens() -> pl.DataFrame:
    rows = [("p1", "x" * 400, True), ("p1", "y" * 40, True), ("p1", "z" * 10, False), ("p1", "w" * 80, True),
            ("p2", "a" * 50, False), ("p2", "b" * 60, True)]
    df = pl.DataFrame(rows, schema=["problem_id", "generation", "generation_correct"], orient="row")
    return df.with_columns(pl.lit("q").alias("problem"), pl.lit("5").alias("answer"), pl.lit("t").alias("source"),
                           pl.lit(5).cast(pl.Int64).alias("answer_int"),
                           (pl.col("generation").str.len_chars() // 4).cast(pl.Int64).alias("generation_tokens"))


def test_shortest_correct_trace_and_stats() -> None:
    df = _gens()
    chosen = shortest_correct(df)
    assert dict(zip(chosen["problem_id"], chosen["generation"], strict=True)) == {"p1": "y" * 40, "p2": "b" * 60}
    assert shortest_correct(df, max_tokens=9)["problem_id"].to_list() == []
    stats = problem_stats(df)
    p1 = stats.filter(pl.col("problem_id") == "p1").row(0, named=True)
    assert p1["n_generations"] == 4 and p1["pass_rate"] == 0.75 and p1["min_correct_tokens"] == 10


def test_pass_rate_band() -> None:
    rows = []
    for pid, n_ok in (("easy", 4), ("hard", 1), ("mid", 2), ("none", 0)):
        for k in range(4):
            rows.append((pid, f"problem {pid} " * 5, "7", f"trace {k} \\boxed{{7}}", k < n_ok))
    df = pl.DataFrame(rows, schema=["problem_id", "problem", "answer", "generation", "generation_correct"],
                      orient="row")
    from kit.learn.data import _finish
    res = curate([_finish(df.with_columns(pl.lit("s").alias("source")), None, "t")], eval_sets={})
    assert sorted(res.sft["problem_id"]) == ["hard", "mid"]
    d = res.report.to_dict()["dropped"]["sft"]
    assert d["pass_rate>0.5"] == 1 and d["pass_rate<=0"] == 1


def test_loaders_missing_columns(tmp_path: Path) -> None:
    p = tmp_path / "probs.jsonl"
    p.write_text(json.dumps({"id": "1", "problem": "x"}) + "\n")
    with pytest.raises(DataError, match=r"probs.jsonl.*'answer'"):
        load_problem_file(p)
    q = tmp_path / "r1.jsonl"
    q.write_text(json.dumps({"problem": "x", "answer": "1"}) + "\n")
    with pytest.raises(DataError, match=r"r1.jsonl.*'generations'"):
        load_openr1(q)
    m = tmp_path / "light.jsonl"
    m.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"light.jsonl.*'answer'"):
        load_messages(m)


def test_loaders_empty_traces_and_non_integer_answers(tmp_path: Path) -> None:
    q = tmp_path / "r1.jsonl"
    rows = [{"problem": "p one", "answer": "\\frac{1}{2}", "generations": ["so \\boxed{\\frac12}", "  "],
             "correctness_math_verify": [True, False]},
            {"problem": "p two", "answer": "025", "generations": ["\\boxed{25}", "\\boxed{24}"]}]
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = DropReport()
    df = verify(load_any(q, report=report))
    assert report.to_dict()["dropped"]["load"]["empty_trace"] == 1
    assert df.height == 3
    assert df["answer_int"].to_list() == [None, 25, 25]  # non-integer kept, flagged
    assert df["generation_correct"].to_list() == [True, True, False]  # graded where no flag
    m = tmp_path / "light.jsonl"
    m.write_text(json.dumps({"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": ""}],
                             "answer": "3"}) + "\n")
    rep = DropReport()
    assert load_messages(m, report=rep).height == 0
    assert rep.to_dict()["dropped"]["load"]["empty_trace"] == 1


def test_format_assistant() -> None:
    assert format_assistant("think hard</think>The answer is \\boxed{5}.", "5") == (
        "<think>\nthink hard\n</think>\n\nThe answer is \\boxed{5}.")
    out = format_assistant("no marker, 5", "5")
    assert out.startswith("<think>\nno marker, 5\n</think>\n\n") and out.endswith("\\boxed{5}$.")


def test_curate_end_to_end(tmp_path: Path) -> None:
    from training.curate import CurateConfig, InputConfig, run

    cfg = CurateConfig(inputs=[InputConfig(path="aime25", kind="problems"),
                               InputConfig(path="skythought_aime24", kind="traces"),
                               InputConfig(path="nemoskills", kind="traces")], out=str(tmp_path))
    report = run(cfg)
    d = report.to_dict()
    assert d["dropped"]["problems"]["contaminated:aime24"] >= 30  # the skythought pool is AIME 2024
    assert d["dropped"]["problems"]["contaminated:aime25"] >= 30
    sft = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    rl = [json.loads(x) for x in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert sft and rl and len(sft) == d["totals"]["sft_examples"]
    assert all(isinstance(r["answer"], int) for r in rl)
    assert all(m["messages"][1]["content"].startswith("<think>\n") and "\\boxed" in m["messages"][1]["content"]
               for m in sft)
    assert json.loads((tmp_path / "drop_report.json").read_text()) == d


def test_config_unknown_key(tmp_path: Path) -> None:
    from training.curate import CurateConfig, main

    p = tmp_path / "c.yaml"
    p.write_text("inputs: []\nmax_tokenz: 5\n")
    with pytest.raises(ConfigError, match="max_tokenz"):
        load_yaml(CurateConfig, p)
    assert main(["--config", str(p)]) == 2
    assert load_yaml(CurateConfig, "training/configs/curate.yaml").max_pass_rate == 0.5
