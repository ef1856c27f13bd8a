"""The solver on real recorded text (replay engine, virtual time): early stop, abort, deadline, TIR, records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kit.offline.runs import read_events
from kit.offline.traces import load_pool
from kit.runtime.answers import extract_answer
from kit.runtime.engines.base import GenParams
from kit.runtime.profiles import get_profile
from kit.runtime.prompts import COT, TIR
from kit.runtime.records import RunRecorder
from kit.runtime.sandbox import Sandbox
from kit.runtime.solver import Solver, SolverConfig, is_looping, sample_seed
from kit.runtime.voting import StopRules, Vote, decided, majority
from kit.sim.replay import ReplayConfig, ReplayEngine

AIMO2 = get_profile("aimo2")


@pytest.fixture(scope="module")
def sky():
    samples = load_pool("skythought_aime24")
    by_problem: dict[str, list] = {}
    for s in samples:
        by_problem.setdefault(s.problem_id, []).append(s)
    return by_problem


def _engine(samples) -> ReplayEngine:
    return ReplayEngine.from_samples(samples, ReplayConfig(chunk_tokens=64))


def _cot(n: int = 11, **kw) -> SolverConfig:
    kw.setdefault("repetition_repeats", 0)  # early-stop tests compare against full-length finishing order
    return SolverConfig(n_samples=n, max_tokens=100_000, prompts=(COT,), stop_after_reasoning=False, **kw)


def _expected(engine: ReplayEngine, recorded: list, n: int, pid: str, seed: int = 0):
    """Finishing order (fewest tokens first, all start together) and the rule's stop point."""
    mapped = [recorded[sample_seed(seed, pid, i) % len(recorded)] for i in range(n)]
    order = sorted(range(n), key=lambda i: (engine.count_tokens(mapped[i].text), i))
    votes: list[Vote] = []
    for k, i in enumerate(order):
        votes.append(Vote(AIMO2.to_answer(extract_answer(mapped[i].text)), order=k))
        d = decided(votes, running=n - k - 1, rules=StopRules())
        if d.stop:
            return order, k + 1, d
    raise AssertionError("unreachable: running == 0 always decides")


def test_early_stop_fires_exactly_when_the_rule_says(sky) -> None:
    checked_early = 0
    for pid in ("0", "5", "24", "26", "10", "3"):
        recorded = sky[pid]
        engine = _engine(recorded)
        order, k, d = _expected(engine, recorded, 11, pid)
        solver = Solver(engine, _cot())
        result = asyncio.run(solver.solve(pid, recorded[0].problem))
        finished = sorted((s for s in result.samples if s.done), key=lambda s: s.finished)
        assert len(finished) == k, (pid, result.reason, d.reason)
        assert [s.index for s in finished] == order[:k]
        assert result.reason == d.reason
        assert result.answer == (d.answer if d.answer is not None else AIMO2.fallback_answer)
        checked_early += k < 11
    assert checked_early >= 3  # the pool really exercises early stopping


def test_aborted_samples_stop_consuming_tokens(sky) -> None:
    recorded = sky["24"]  # decided after 4 of the first 4
    engine = _engine(recorded)
    solver = Solver(engine, _cot())

    async def run():
        result = await solver.solve("24", recorded[0].problem)
        before = engine.stats.total_tokens
        await engine.clock.sleep(3600)  # an hour of virtual time later nothing more was generated
        return result, before, engine.stats.total_tokens

    result, before, after = asyncio.run(run())
    assert result.reason.startswith("agreement")
    assert after == before
    aborted = [s for s in result.samples if s.finish_reason == "abort"]
    assert len(aborted) == 11 - result.samples_finished
    full = {s.index: engine.count_tokens(recorded[sample_seed(0, "24", s.index) % 11].text) for s in aborted}
    for s in aborted:
        assert 0 < s.tokens < full[s.index]
    assert sum(s.tokens for s in result.samples) == result.tokens


def test_deadline_returns_in_time_with_a_valid_answer(sky) -> None:
    recorded = sky["1"]
    engine = _engine(recorded)
    solver = Solver(engine, _cot())

    async def run():
        start = engine.clock.now()
        result = await solver.solve("1", recorded[0].problem, deadline=start + 60.0)
        return start, engine.clock.now(), result

    start, end, result = asyncio.run(run())
    assert end - start <= 60.0 + 1e-6
    assert result.reason.startswith("deadline")
    # the vote: finished samples at weight 1, the deadline's partial answers at partial_weight 0.5
    votes = [Vote(s.answer, weight=1.0 if s.done else 0.5) for s in result.samples if s.answer is not None]
    assert result.answer == (majority(votes) if votes else AIMO2.fallback_answer)
    assert all(s.finish_reason in ("abort", "stop", "length") for s in result.samples)
    assert result.tokens > 0


def test_deadline_uses_partial_answers_when_nothing_finished() -> None:
    text = "".join(f"Step {i}: we compute. " for i in range(20)) + r"So far the answer looks like \boxed{321}. " \
        + "".join(f"Check {i} passes. " for i in range(3000))
    engine = ReplayEngine({"Find x.": [text] * 3}, ReplayConfig(chunk_tokens=32))
    solver = Solver(engine, _cot(3, partial_weight=0.5))

    async def run():
        return await solver.solve("p", "Find x.", deadline=engine.clock.now() + 5.0)

    result = asyncio.run(run())
    assert result.reason == "deadline"
    assert result.samples_finished == 0
    assert result.answer == 321
    assert result.tally == {321: pytest.approx(1.5)}


def test_the_record_contains_everything(tmp_path: Path, sky) -> None:
    recorded = sky["5"]
    engine = _engine(recorded)
    with RunRecorder(tmp_path / "records.jsonl") as rec:
        solver = Solver(engine, _cot(), recorder=rec)
        result = asyncio.run(solver.solve("5", recorded[0].problem, gold=AIMO2.to_answer(recorded[0].gold)))
    samples = read_events(tmp_path / "records.jsonl", "sample")
    problems = read_events(tmp_path / "records.jsonl", "problem")
    assert len(samples) == 11 and len(problems) == 1
    for row in samples:
        for key in ("problem_id", "index", "kind", "text", "tokens", "raw_answer", "answer", "finish_reason",
                    "started", "finished", "code", "temperature", "top_p"):
            assert key in row
        assert row["text"] and row["tokens"] > 0
    p = problems[0]
    assert p["answer"] == result.answer and p["reason"] == result.reason
    assert p["problem"] == recorded[0].problem.strip() and len(p["problem"]) > 50  # records are self-contained
    assert p["gold"] == AIMO2.to_answer(recorded[0].gold)
    assert p["tokens"] == sum(r["tokens"] for r in samples)
    assert sum(p["tally"].values()) == pytest.approx(sum(1 for r in samples if r["finish_reason"] == "stop"
                                                         and r["answer"] is not None))


def test_tir_turns_execute_and_continue() -> None:
    tora = [s for s in load_pool("tora_gsm8k") if s.source.startswith("tora-code")][:40]
    chosen = [s for s in tora if s.text.count("```output") == 1 and "\\boxed" in s.text][:3]
    assert len(chosen) == 3
    engine = ReplayEngine.from_samples(chosen, ReplayConfig(chunk_tokens=8))
    cfg = SolverConfig(n_samples=1, max_tokens=4000, prompts=(TIR,), stop_after_reasoning=False, early_stop=False)
    with Sandbox(workers=2, timeout=5) as sb:
        solver = Solver(engine, cfg, sandbox=sb)
        for s in chosen:
            result = asyncio.run(solver.solve(s.problem_id, s.problem))
            sample = result.samples[0]
            assert len(sample.code) == 1, sample.text[-500:]
            call = sample.code[0]
            assert call["status"] == "ok"
            recorded_output = s.text.split("```output\n", 1)[1].split("\n```", 1)[0].strip()
            assert call["output"].strip() == f"```output\n{recorded_output}\n```"
            assert sample.text.endswith(s.text[s.text.rindex("```output"):].split("```\n", 1)[1])
            # the sample goes on with the recorded text after its output block, so it boxes what the recording did
            assert sample.raw_answer == extract_answer(s.text) is not None
            assert result.answer == AIMO2.to_answer(extract_answer(s.text))
        assert sb.sessions == []  # sessions of a solved problem are closed


def test_repetition_is_stopped(sky) -> None:
    looping = "Let me think. " + "I will check again. " * 400 + r"\boxed{5}"
    engine = ReplayEngine({"Loop?": [looping]}, ReplayConfig(chunk_tokens=8))
    result = asyncio.run(Solver(engine, _cot(1, repetition_repeats=8)).solve("r", "Loop?"))
    s = result.samples[0]
    assert s.finish_reason == "repetition"
    assert s.tokens < engine.count_tokens(looping) / 4
    # a real degenerate loop: SkyThought checkpoint-140 on problem 5 repeats one paragraph until cut off
    real = next(x for x in sky["5"] if x.source == "checkpoint-140.jsonl.gz")
    engine = ReplayEngine({real.problem: [real.text]}, ReplayConfig(chunk_tokens=16))
    result = asyncio.run(Solver(engine, _cot(1, repetition_repeats=8)).solve("5", real.problem))
    assert result.samples[0].finish_reason == "repetition"
    assert result.samples[0].tokens < engine.count_tokens(real.text) / 2
    assert is_looping("abc " + "xyzw1234 " * 6, 8, 400, 6)
    assert not is_looping("the numbers 1 2 3 4 5 6 7 8 9 10 11 12 13", 8, 400, 6)


def test_stop_at_first_boxed() -> None:
    text = r"Quick: \boxed{12}. But wait, maybe \boxed{13}." + " more" * 500
    engine = ReplayEngine({"Q?": [text]}, ReplayConfig(chunk_tokens=4))
    result = asyncio.run(Solver(engine, _cot(1, stop_at_first_boxed=True)).solve("b", "Q?"))
    assert result.answer == 12
    assert result.samples[0].tokens < 40


class _BrokenEngine(ReplayEngine):
    async def generate(self, prompt: str, params: GenParams, request_id: str):  # type: ignore[override]
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
        yield  # pragma: no cover


@pytest.mark.parametrize("problem", ["", "   \n "], ids=["empty", "blank"])
def test_empty_problems_give_a_fallback_never_an_exception(tmp_path: Path, problem: str) -> None:
    engine = ReplayEngine({"Known.": ["\\boxed{1}"]}, ReplayConfig(on_unknown="error"))
    with RunRecorder(tmp_path / "r.jsonl") as rec:
        result = asyncio.run(Solver(engine, _cot(2), recorder=rec).solve("bad", problem))
    assert result.answer == AIMO2.fallback_answer and "empty problem" in (result.error or "")
    assert result.samples == [] and engine.stats.requests == 0  # nothing was generated
    assert read_events(tmp_path / "r.jsonl", "problem")[0]["answer"] == AIMO2.fallback_answer


@pytest.mark.parametrize(
    ("problem", "cleaned"),
    [
        (b"\xff\xfe bad bytes \x80", "\ufffd\ufffd bad bytes \ufffd"),
        ("x" * 100_000, "x" * 10_000 + "\n[...]\n" + "x" * 10_000),
        ("Find\x00 y.", "Find y."),
    ],
    ids=["non-utf8", "huge", "nul"],
)
def test_undecodable_huge_and_nul_problems_are_cleaned_then_solved(tmp_path: Path, problem, cleaned: str) -> None:
    engine = ReplayEngine({cleaned: ["so \\boxed{7}"]}, ReplayConfig(on_unknown="error"))
    with RunRecorder(tmp_path / "r.jsonl") as rec:
        result = asyncio.run(Solver(engine, _cot(2), recorder=rec).solve("odd", problem))
    assert result.error is None and result.answer == 7  # solved on the cleaned text, not a fallback
    assert all(s.finish_reason == "stop" for s in result.samples)
    assert read_events(tmp_path / "r.jsonl", "problem")[0]["problem"] == cleaned


def test_engine_failure_gives_a_fallback_with_the_error_recorded(tmp_path: Path) -> None:
    engine = _BrokenEngine({"Q": ["x"]})
    with RunRecorder(tmp_path / "r.jsonl") as rec:
        result = asyncio.run(Solver(engine, _cot(3), recorder=rec).solve("e", "Q"))
    assert result.answer == AIMO2.fallback_answer
    assert all("illegal memory access" in (s.error or "") for s in result.samples)
    sample_rows = read_events(tmp_path / "r.jsonl", "sample")
    assert len(sample_rows) == 3 and all(r["finish_reason"] == "error" for r in sample_rows)


def test_tir_prompts_need_a_sandbox() -> None:
    with pytest.raises(ValueError, match="Sandbox"):
        Solver(ReplayEngine({"Q": ["x"]}), SolverConfig(prompts=(TIR,)))


def test_majority_over_all_samples_without_early_stop(sky) -> None:
    recorded = sky["22"]
    engine = _engine(recorded)
    result = asyncio.run(Solver(engine, _cot(early_stop=False)).solve("22", recorded[0].problem))
    assert result.samples_finished == 11 and result.reason == "all finished"
    expected = majority([Vote(AIMO2.to_answer(extract_answer(s.text)), order=i)
                         for i, s in enumerate(recorded)])
    assert result.answer == expected
    json.dumps(result.tally)  # plain data
