"""Selection strategies, the strategy table and its bootstrap CIs, candidates from trace pools and run records,
and the solver's multi-agent sampling schedule (replay engine: real recorded text, no vLLM)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
from pathlib import Path

import pytest

from kit.offline.runs import RecordFormatError, read_events
from kit.offline.selection import (
    STRATEGIES,
    Candidate,
    SampleWeights,
    choices_frame,
    code_ok_from_text,
    first_finish_strategy,
    majority_strategy,
    problems_from_pool,
    problems_from_records,
    random_strategy,
    scored_strategy,
    strategy_table,
    weighted_strategy,
)
from kit.offline.traces import load_pool
from kit.runtime.answers import extract_answer
from kit.runtime.config import ConfigError, load_yaml
from kit.runtime.profiles import get_profile
from kit.runtime.prompts import COT
from kit.runtime.records import RunRecorder
from kit.runtime.solver import SAMPLING_PRESETS, SamplingSpec, Solver, SolverConfig
from kit.runtime.tokens import ApproxTokenizer
from kit.runtime.voting import Vote, majority
from kit.sim.replay import ReplayConfig, ReplayEngine

AIMO2 = get_profile("aimo2")


def C(answer, rank, tokens=100, code_ok=None, score=None) -> Candidate:
    return Candidate(answer=answer, tokens=tokens, finish_rank=rank, code_ok=code_ok, score=score)


@pytest.fixture(scope="module")
def sky():
    return problems_from_pool("skythought_aime24")


# --- strategies -------------------------------------------------------------------------------------


def test_majority_is_kit_voting_with_ties_to_the_larger_answer() -> None:
    cands = [C(7, 2), C(3, 0), C(7, 1), C(3, 3), C(None, 4)]
    assert STRATEGIES["majority"]("p", cands) == 7  # 2-2 tie -> larger
    assert majority_strategy("earliest")("p", cands) == 3  # 3 finished first
    assert STRATEGIES["majority"]("p", [C(None, 0), C(None, 1)]) is None
    assert STRATEGIES["majority"]("p", [C(5, 0), C(2, 1), C(2, 2)]) == 2


def test_majority_agrees_with_kit_voting_on_real_samples(sky) -> None:
    for _, text, _, cands in sky:
        votes = [Vote(c.answer, order=c.finish_rank) for c in cands]
        assert STRATEGIES["majority"](text, cands) == majority(votes)


def test_first_finish_takes_the_first_answered_sample_and_votes_within_a_quorum() -> None:
    cands = [C(1, 4), C(None, 0), C(5, 1), C(9, 2), C(9, 3), C(1, 5)]
    assert STRATEGIES["first_finish"]("p", cands) == 5  # rank 0 has no answer: passed over
    assert first_finish_strategy(2)("p", cands) == 5  # 5 vs 9 tie -> the one that finished first
    assert first_finish_strategy(3)("p", cands) == 9  # first three answered: 5, 9, 9
    assert first_finish_strategy(50)("p", cands) == 9  # quorum beyond the answers: all vote (9:2, 1:2, 5:1 -> 9 earlier)
    assert STRATEGIES["first_finish"]("p", [C(None, 0)]) is None
    with pytest.raises(ValueError, match="quorum"):
        first_finish_strategy(0)


def test_first_finish_on_real_samples_is_the_shortest_answered_sample(sky) -> None:
    tok = ApproxTokenizer()
    by_pid: dict[str, list] = {}
    for s in load_pool("skythought_aime24"):
        by_pid.setdefault(s.problem_id, []).append(s)
    for pid, text, _, cands in sky:
        answered = [(tok.count(s.text), i, AIMO2.to_answer(extract_answer(s.text))) for i, s in enumerate(by_pid[pid])]
        answered = sorted(a for a in answered if a[2] is not None)
        expected = answered[0][2] if answered else None
        assert STRATEGIES["first_finish"](text, cands) == expected


def test_weighted_counts_code_verified_and_short_samples_more() -> None:
    plain = weighted_strategy(SampleWeights(length_power=0))
    # two failed-code votes for 4 vs one verified vote for 8: 2 x 0.5 < 1.5
    cands = [C(4, 0, code_ok=False), C(4, 1, code_ok=False), C(8, 2, code_ok=True)]
    assert STRATEGIES["majority"]("p", cands) == 4
    assert plain("p", cands) == 8
    # length: one short sample vs two samples four times as long (median 400): the short one weighs
    # (400/100)^power against 2 x 1 -> power 1: 4 > 2; power 0.25: 1.41 < 2
    short_vs_long = [C(11, 0, tokens=100), C(22, 1, tokens=400), C(22, 2, tokens=400)]
    assert weighted_strategy(SampleWeights(length_power=1.0))("p", short_vs_long) == 11
    assert weighted_strategy(SampleWeights(length_power=0.25))("p", short_vs_long) == 22
    assert STRATEGIES["majority"]("p", short_vs_long) == 22


def test_weighted_without_code_or_length_terms_is_majority(sky) -> None:
    neutral = weighted_strategy(SampleWeights(code_ok=1.0, code_error=1.0, length_power=0.0))
    for _, text, _, cands in sky:
        assert neutral(text, cands) == STRATEGIES["majority"](text, cands)


def test_random_is_seeded_per_problem_and_unbiased(sky) -> None:
    rnd = random_strategy(0)
    for _, text, _, cands in sky:
        assert rnd(text, cands) == rnd(text, list(cands))
        assert rnd(text, cands) in {c.answer for c in cands}
    # Over many seeds, the random pick's accuracy converges to pass@1 (the mean share of correct samples).
    pass1 = sum(sum(c.answer == gold for c in cands) / len(cands) for _, _, gold, cands in sky) / len(sky)
    draws = [sum(random_strategy(s)(text, cands) == gold for _, text, gold, cands in sky) / len(sky)
             for s in range(300)]
    assert sum(draws) / len(draws) == pytest.approx(pass1, abs=0.02)
    assert len(set(draws)) > 3  # seeds really differ


def test_scored_strategy_best_and_vote() -> None:
    cands = [C(1, 0, score=3.0), C(2, 1, score=-1.0), C(2, 2, score=-1.0), C(None, 3)]
    assert scored_strategy("best")("p", cands) == 1
    # vote: sigma(3)=0.953 vs 2 x sigma(-1)=0.538 -> 1 wins
    assert scored_strategy("vote")("p", cands) == 1
    many_weak = [C(1, 0, score=0.5), C(2, 1, score=0.0), C(2, 2, score=0.0)]  # 0.62 vs 2 x 0.5
    assert scored_strategy("vote")("p", many_weak) == 2
    assert scored_strategy("best")("p", many_weak) == 1
    with pytest.raises(ValueError, match="score"):
        scored_strategy()("p", [C(1, 0)])
    with pytest.raises(ValueError, match="mode"):
        scored_strategy("max")


# --- the table ---------------------------------------------------------------------------------------


def _synthetic(n: int, p: float, seed: int):
    rng = random.Random(seed)
    return [(f"q{i}", f"problem {i}", 1, [C(1 if rng.random() < p else 2, 0)]) for i in range(n)]


def test_strategy_table_counts_and_bootstrap_interval() -> None:
    problems = _synthetic(400, 0.5, seed=1)
    problems.append(("ungraded", "no gold", None, [C(1, 0)]))
    table = strategy_table(problems, {"first": STRATEGIES["first"]}, n_boot=2000, seed=0)
    row = table.row(0, named=True)
    correct = sum(cands[0].answer == 1 for _, _, gold, cands in problems if gold is not None)
    assert table.columns == ["strategy", "correct", "n", "accuracy", "ci_low", "ci_high"]
    assert row["n"] == 400 and row["correct"] == correct and row["accuracy"] == pytest.approx(correct / 400)
    # the percentile bootstrap of a mean of 0/1 draws matches the normal interval p +- 1.96 sqrt(p(1-p)/n)
    half = 1.96 * math.sqrt(row["accuracy"] * (1 - row["accuracy"]) / 400)
    assert row["ci_low"] == pytest.approx(row["accuracy"] - half, abs=0.01)
    assert row["ci_high"] == pytest.approx(row["accuracy"] + half, abs=0.01)
    again = strategy_table(problems, {"first": STRATEGIES["first"]}, n_boot=2000, seed=0)
    assert again.equals(table)


def test_strategy_table_on_a_pool_matches_an_independent_count(sky) -> None:
    table = strategy_table(sky, STRATEGIES, n_boot=200)
    assert table["strategy"].to_list() == list(STRATEGIES)
    choices = choices_frame(sky, STRATEGIES)
    for row in table.iter_rows(named=True):
        expected = sum(STRATEGIES[row["strategy"]](text, cands) == gold for _, text, gold, cands in sky)
        assert row["correct"] == expected == choices.filter(choices["strategy"] == row["strategy"])["correct"].sum()
        assert row["n"] == 30
        assert 0.0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1.0
    always = strategy_table(sky, {"oracle": lambda text, cands: next(g for _, t, g, _ in sky if t == text)})
    assert always.row(0, named=True)["ci_low"] == 1.0  # every resample is all-correct


def test_strategy_table_needs_graded_problems() -> None:
    with pytest.raises(ValueError, match="gold"):
        strategy_table([("a", "x", None, [C(1, 0)])], STRATEGIES)


# --- candidates from recorded samples ------------------------------------------------------------------


def test_pool_candidates_rank_by_length_and_normalise(sky) -> None:
    assert len(sky) == 30
    for _, _, gold, cands in sky:
        assert len(cands) == 11
        assert sorted(c.finish_rank for c in cands) == list(range(11))
        by_rank = sorted(cands, key=lambda c: c.finish_rank)
        assert all(a.tokens <= b.tokens for a, b in itertools.pairwise(by_rank))
        assert gold is not None and all(c.answer == AIMO2.to_answer(extract_answer(c.text)) for c in cands)


def test_candidates_keep_sample_order_so_first_is_sample_zero_not_the_first_finisher(sky) -> None:
    """``first`` is the baseline "submit sample 0"; First-Finish is the one that looks at finish ranks."""
    by_pid: dict[str, list] = {}
    for s in load_pool("skythought_aime24"):
        by_pid.setdefault(s.problem_id, []).append(s)
    differs = 0
    for pid, text, _, cands in sky:
        recorded = [AIMO2.to_answer(extract_answer(s.text)) for s in by_pid[pid]]
        assert [c.answer for c in cands] == recorded  # sample order, as loaded
        assert STRATEGIES["first"](text, cands) == recorded[0]
        differs += cands[0].finish_rank != 0
    assert differs > 10  # sample 0 is rarely the shortest: the two baselines really differ here


def test_code_verdict_from_recorded_tir_text() -> None:
    ok = "```python\nprint(2+2)\n```\n```output\n4\n```\nSo \\boxed{4}."
    bad = ("```python\nx = [1][3]\n```\n```output\nTraceback (most recent call last):\n  File ...\n"
           "IndexError: list index out of range\n```\nThen \\boxed{3}.")
    assert code_ok_from_text(ok) is True
    assert code_ok_from_text(bad) is False
    assert code_ok_from_text("No code, just \\boxed{1}.") is None
    tora = problems_from_pool("tora_gsm8k")
    verdicts = [c.code_ok for _, _, _, cands in tora for c in cands]
    assert verdicts.count(False) == 4  # the four samples whose recorded output is an exception
    assert verdicts.count(True) > 2500


def _solve_with_records(path: Path, pids: list[str], config: SolverConfig) -> dict[str, int]:
    by_pid: dict[str, list] = {}
    for s in load_pool("skythought_aime24"):
        by_pid.setdefault(s.problem_id, []).append(s)
    answers = {}
    with RunRecorder(path) as rec:
        for pid in pids:
            engine = ReplayEngine.from_samples(by_pid[pid], ReplayConfig(chunk_tokens=64))
            result = asyncio.run(Solver(engine, config, recorder=rec).solve(
                pid, by_pid[pid][0].problem, gold=AIMO2.to_answer(by_pid[pid][0].gold)))
            answers[pid] = result.answer
    return answers


def test_record_candidates_reproduce_the_solver(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    pids = ["0", "5", "22", "26"]
    config = SolverConfig(n_samples=6, max_tokens=100_000, prompts=(COT,), stop_after_reasoning=False,
                          repetition_repeats=0, early_stop=False)
    answers = _solve_with_records(path, pids, config)
    problems = {p[0]: p for p in problems_from_records(path, {"0": "text zero"})}
    assert set(problems) == set(pids)
    recorded = {e["problem_id"]: e["problem"] for e in read_events(path, "problem")}
    assert problems["0"][1] == "text zero" and problems["5"][1] == recorded["5"] and len(recorded["5"]) > 50
    samples = read_events(path, "sample")
    golds = {e["problem_id"]: e["gold"] for e in read_events(path, "problem")}
    for pid in pids:
        _, text, gold, cands = problems[pid]
        assert gold == golds[pid] and len(cands) == 6
        # without early stop the solver's answer is the plain majority of its finished samples
        assert STRATEGIES["majority"](text, cands) == answers[pid]
        rows = sorted((s for s in samples if s["problem_id"] == pid), key=lambda s: (s["finished"], s["index"]))
        first_answered = next(s["answer"] for s in rows if s["answer"] is not None)
        assert STRATEGIES["first_finish"](text, cands) == first_answered
        assert [c.tokens for c in sorted(cands, key=lambda c: c.finish_rank)] == [s["tokens"] for s in rows]


def test_bad_records_give_clear_errors(tmp_path: Path) -> None:
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"event": "sample", "version": 0, "problem_id": "1"}) + "\n")
    with pytest.raises(RecordFormatError, match="older run format"):
        problems_from_records(old)
    no_tokens = tmp_path / "no_tokens.jsonl"
    with RunRecorder(no_tokens) as rec:
        rec.write("sample", problem_id="7", index=3, answer=5, finish_reason="stop", finished=1.0, text="x")
    with pytest.raises(RecordFormatError, match=r"no_tokens.jsonl:1: sample event \(problem 7\) has no 'tokens'"):
        problems_from_records(no_tokens)


def test_entropy_strategies_read_the_recorded_entropies(tmp_path: Path) -> None:
    from kit.offline.runs import load_records_run
    from kit.offline.selection import strategies_table

    path = tmp_path / "records.jsonl"
    # problem a (gold 9): two confident-looking wrong 7s lose to one very certain 9 under 1/H
    # problem b (gold 4): 4 wins every vote
    rows = {"a": [(7, 0.9, 0.9), (7, 0.8, 0.9), (9, 0.1, 0.05)], "b": [(4, 0.5, 0.5), (4, 0.6, 0.4), (5, 0.7, 0.9)]}
    with RunRecorder(path) as rec:
        for pid, samples in rows.items():
            for i, (answer, mean, tail) in enumerate(samples):
                rec.write("sample", problem_id=pid, index=i, text=f"\\boxed{{{answer}}}", tokens=10 + i,
                          answer=answer, finish_reason="stop", started=0.0, finished=1.0 + i,
                          entropy_mean=mean, entropy_tail=tail)
            rec.write("problem", problem_id=pid, problem=f"problem {pid}", answer=0, gold={"a": 9, "b": 4}[pid])
    run = load_records_run(path)
    table = {r["strategy"]: r["correct"] for r in strategies_table(run, n_boot=50).iter_rows(named=True)}
    assert table["majority"] == 1 and table["entropy"] == 2 and table["entropy_tail"] == 2
    # composite on a: 7 → 2·2/3 + 0.3/0.9 + 0.5 = 2.17; 9 → 2/3 + 0.3/0.05 = 6.67
    assert table["composite"] == 2
    bad = tmp_path / "bad.jsonl"
    with RunRecorder(bad) as rec:
        rec.write("sample", problem_id="x", index=0, text="", tokens=1, finish_reason="stop", entropy_mean=-1.0)
    with pytest.raises(RecordFormatError, match=r"bad.jsonl:1: field 'entropy_mean' must be a non-negative"):
        load_records_run(bad)


# --- multi-agent sampling ----------------------------------------------------------------------------


class _ParamsSeen(ReplayEngine):
    """The replay engine, noting the sampling parameters of every request it receives."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[int, list] = {}

    def _start(self, prompt, params, request_id):
        self.seen.setdefault(int(request_id.split(":")[1]), []).append(params)
        return super()._start(prompt, params, request_id)


def test_trimer_agents_give_each_sample_its_scheduled_params(tmp_path: Path) -> None:
    recorded = [s for s in load_pool("skythought_aime24") if s.problem_id == "3"]
    engine = _ParamsSeen.from_samples(recorded, ReplayConfig(chunk_tokens=64))
    config = SolverConfig(n_samples=9, max_tokens=100_000, prompts=(COT,), stop_after_reasoning=False,
                          early_stop=False, sampling_preset="trimer")
    agents = SAMPLING_PRESETS["trimer"]
    assert [(a.temperature, a.top_p) for a in agents] == [(0.2, 0.85), (0.4, 0.90), (0.6, 0.92), (0.8, 0.95)]
    assert config.sampling == agents
    with RunRecorder(tmp_path / "r.jsonl") as rec:
        asyncio.run(Solver(engine, config, recorder=rec).solve("3", recorded[0].problem))
    assert sorted(engine.seen) == list(range(9))
    for index, params in engine.seen.items():
        want = agents[index % 4]
        assert all((p.temperature, p.top_p, p.min_p) == (want.temperature, want.top_p, want.min_p) for p in params)
    for row in read_events(tmp_path / "r.jsonl", "sample"):
        want = agents[row["index"] % 4]
        assert row["agent"] == row["index"] % 4
        assert (row["temperature"], row["top_p"], row["min_p"]) == (want.temperature, want.top_p, want.min_p)


def test_sampling_preset_from_yaml_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("solver:\n  n_samples: 8\n  sampling_preset: trimer\n")
    cfg = load_yaml(SolverConfig, good, section="solver")
    assert cfg.sampling == SAMPLING_PRESETS["trimer"]
    from dataclasses import replace

    assert replace(cfg, n_samples=4).sampling == SAMPLING_PRESETS["trimer"]  # survives dataclasses.replace
    bad = tmp_path / "bad.yaml"
    bad.write_text("solver:\n  sampling_preset: fancy\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown sampling_preset 'fancy'"):
        load_yaml(SolverConfig, bad, section="solver")
    with pytest.raises(ValueError, match="not both"):
        SolverConfig(sampling=(SamplingSpec(temperature=0.3),), sampling_preset="trimer")
