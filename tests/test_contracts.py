"""The submission path's contracts, one regression test each (docs/architecture.md "Contracts").

Every test here failed on the kit before the layering (commit a3977a3; the closing note of issue 13), when
this file still imported through the old flat module names.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest

from kit.offline.runs import read_events
from kit.runtime.engines.base import RealClock
from kit.runtime.kaggle import SubmissionConfig, build_predict
from kit.runtime.profiles import AIMO2, Profile
from kit.runtime.prompts import COT, TIR, PromptTemplate
from kit.runtime.records import RunRecorder
from kit.runtime.sandbox import Sandbox
from kit.runtime.schedule import make_policy
from kit.runtime.solver import Solver, SolverConfig, sample_seed
from kit.runtime.voting import SECOND_PLACE_RULES, SECOND_PLACE_WEIGHTING, StopRules
from kit.sim.replay import ReplayConfig, ReplayEngine, SpeedModel
from kit.sim.simulate import SyntheticSpec, pool_synthetic, race, run_competition

SECOND_PLACE = StopRules(agreements=SECOND_PLACE_RULES, certain=False, weighting=SECOND_PLACE_WEIGHTING)
VOTES = [123, 456, 123, 789, 123, 10, 10, 10, 10, 456]
"""In finishing order: "4 of the last 5" fires on 10 at the 9th, while the weighted majority is 123
(10 ≤ 20 weighs 0.6: 4 × 0.6 = 2.4 < 3); the 10th is still running then."""


def _events(path: Path, event: str) -> list[dict]:
    return read_events(path, event)


def _bijective_problem_id(n: int) -> str:
    """A problem id whose samples 0..n-1 map to n different recordings (seed % n is a permutation)."""
    for k in range(10_000):
        pid = f"p{k}"
        if len({sample_seed(0, pid, i) % n for i in range(n)}) == n:
            return pid
    raise AssertionError("no bijective id")


# --- 1. the answer a stop names is the answer submitted --------------------------------------------------


def test_the_solver_submits_the_answer_its_stop_rule_decided() -> None:
    problem = "Find the number of ordered pairs."
    texts = [f"{'Let us count. ' * (20 * (k + 1))} so the answer is \\boxed{{{a}}}." for k, a in enumerate(VOTES)]
    engine = ReplayEngine({problem: texts}, ReplayConfig(chunk_tokens=8))
    cfg = SolverConfig(n_samples=len(VOTES), max_tokens=100_000, prompts=(COT,), stop_after_reasoning=False,
                       repetition_repeats=0, rules=SECOND_PLACE)
    result = asyncio.run(Solver(engine, cfg).solve(_bijective_problem_id(len(VOTES)), problem))
    assert result.reason == "agreement: 4 of the last 5"
    assert result.samples_finished == 9
    assert result.answer == 10  # the decided answer, not the weighted majority (123)


def test_the_simulator_submits_the_decided_answer_too() -> None:
    samples = [(a, 1000 * (k + 1)) for k, a in enumerate(VOTES)]
    r = race(samples, max_tokens=100_000, seconds=1e9, rules=SECOND_PLACE, speed=SpeedModel.l4x4_7b_awq())
    assert (r.reason, r.finished, r.answer) == ("agreement: 4 of the last 5", 9, 10)


# --- 2. a cancelled solve still records everything and closes its sessions ------------------------------


CODE_THEN_MORE = "Compute it.\n```python\nx = 6 * 7\nprint(x)\n```\n```output\n42\n```\n" + "Then check. " * 400 + "\\boxed{42}"


def test_a_cancelled_solve_records_every_sample_and_the_problem_and_closes_its_sessions(tmp_path: Path) -> None:
    problem = "What is six times seven?"
    engine = ReplayEngine({problem: [CODE_THEN_MORE] * 3}, ReplayConfig(realtime=True, speedup=20),
                          clock=RealClock())
    cfg = SolverConfig(n_samples=3, max_tokens=100_000, prompts=(TIR,), stop_after_reasoning=False,
                       repetition_repeats=0)
    rec = RunRecorder(tmp_path / "records.jsonl")

    async def run() -> None:
        with Sandbox(workers=2, timeout=5) as sb:
            solver = Solver(engine, cfg, sandbox=sb, recorder=rec)
            task = asyncio.create_task(solver.solve("q", problem))
            for _ in range(400):  # until every sample has run its code cell (its session is open)
                await asyncio.sleep(0.02)
                if len(sb.sessions) == 3:
                    break
            assert len(sb.sessions) == 3
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert sb.sessions == []  # closed on the way out

    asyncio.run(run())
    rec.close()
    samples = _events(tmp_path / "records.jsonl", "sample")
    problems = _events(tmp_path / "records.jsonl", "problem")
    assert sorted(s["index"] for s in samples) == [0, 1, 2]
    assert all(s["finish_reason"] in ("abort", "cancelled") and len(s["code"]) == 1 for s in samples)
    assert len(problems) == 1 and problems[0]["reason"] == "cancelled" and "cancelled" in problems[0]["error"]


class _LoopBlocker(ReplayEngine):
    """Blocks the event loop for a few seconds on one problem (a hung C call), then goes on."""

    block = ""
    seconds = 0.0

    async def generate(self, prompt, params, request_id):
        if self.block and self.block in prompt:
            time.sleep(self.seconds)
        async for chunk in super().generate(prompt, params, request_id):
            yield chunk


@pytest.mark.slow
def test_predicts_timeout_path_still_gets_the_samples_and_the_problem_recorded(tmp_path: Path) -> None:
    ok, hung = "What is two plus two?", "What is three plus three?"

    def factory() -> ReplayEngine:
        engine = _LoopBlocker({ok: ["\\boxed{4}"] * 2, hung: ["\\boxed{6}"] * 2},
                              ReplayConfig(realtime=True, speedup=1000), clock=RealClock())
        engine.block, engine.seconds = hung, 4.0
        return engine

    cfg = SubmissionConfig(engine="replay", solver=SolverConfig(n_samples=2, max_tokens=200, prompts=(COT,)),
                           records_dir=str(tmp_path), call_margin_seconds=0.5, total_seconds=3600.0)
    predict = build_predict(cfg.resolve(AIMO2.with_overrides(per_call_seconds=3.0)), engine_factory=factory,
                            started_at=time.time())
    try:
        predict("a", ok)
        t0 = time.monotonic()
        frame = predict("b", hung)
        assert time.monotonic() - t0 < 3.0  # the per-call limit holds
        assert frame["answer"][0] == AIMO2.fallback_answer
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(_events(tmp_path / "records.jsonl", "problem")) < 2:
            time.sleep(0.1)  # the loop unblocks after 4 s and the cancelled solve writes its records
    finally:
        predict.close()
    problems = {p["problem_id"]: p for p in _events(tmp_path / "records.jsonl", "problem")}
    assert problems["b"]["reason"] == "cancelled"
    assert sorted(s["index"] for s in _events(tmp_path / "records.jsonl", "sample") if s["problem_id"] == "b") == [0, 1]


# --- 3. start-up is counted from the notebook's first cell ------------------------------------------------


def test_start_up_is_counted_from_the_notebooks_first_cell(tmp_path: Path, monkeypatch) -> None:
    from kit.sim.replay import engine_factory

    monkeypatch.setenv("AIMO_KIT_RUN_START", repr(time.time() - 300.0))  # the first cell ran 5 minutes ago
    cfg = SubmissionConfig(engine="replay", records_dir=str(tmp_path), total_seconds=3600.0,
                           solver=SolverConfig(n_samples=2, max_tokens=1000, prompts=(COT,))).resolve()
    predict = build_predict(cfg, engine_factory=engine_factory(cfg))
    try:
        predict("x", "Find x.")
    finally:
        predict.close()
    start = _events(tmp_path / "records.jsonl", "run_start")[0]
    assert 300 <= start["startup_seconds"] < 330
    assert "AIMO_KIT_RUN_START" in start["startup_counted_from"]
    safety = min(120.0, 0.05 * 3600)
    assert start["bank_seconds"] == pytest.approx(3600 - start["startup_seconds"] - safety, abs=1.0)


# --- 4. the sample cap is the engine's too, and the speed model is the engine's ---------------------------


def test_the_bank_never_plans_more_samples_than_the_engine_decodes_at_once(tmp_path: Path) -> None:
    problem = "Count the squares."
    speed = SpeedModel.l4x4_14b_awq()
    engine = ReplayEngine({problem: ["\\boxed{7}"] * 16}, ReplayConfig(max_num_seqs=3, speed=speed))
    cfg = SubmissionConfig(engine="replay", policy="equal", records_dir=str(tmp_path), total_seconds=3600.0,
                           solver=SolverConfig(n_samples=16, max_tokens=1000, prompts=(COT,))).resolve()
    predict = build_predict(cfg, engine_factory=lambda: engine, started_at=time.time())
    try:
        predict("s", problem)
    finally:
        predict.close()
    budget = _events(tmp_path / "records.jsonl", "budget")[0]
    problem_event = _events(tmp_path / "records.jsonl", "problem")[0]
    start = _events(tmp_path / "records.jsonl", "run_start")[0]
    assert budget["n_samples"] == 3 and problem_event["samples"] == 3  # min(16, max_num_seqs 3)
    assert start["speed"]["step_s"] == speed.step_s  # the engine's speed model, not 4xL4 7B


def test_engine_presets_name_their_own_speed_model() -> None:
    from kit.runtime.engines.presets import get_preset
    from kit.runtime.throughput import SPEED_PRESETS

    assert {get_preset(p).speed for p in ("l4x4", "h100", "cpu")} == {"l4x4-7b-awq", "h100-7b-bf16", "cpu-tiny"}
    assert all(get_preset(p).speed in SPEED_PRESETS for p in ("l4x4", "h100", "cpu"))


# --- 5. calibration learns from every outcome ----------------------------------------------------------


def test_a_machine_three_times_slower_than_its_model_gets_smaller_budgets_and_no_overrun() -> None:
    pool = pool_synthetic(SyntheticSpec(problems=60, samples=32, seed=3))
    model = SpeedModel.l4x4_14b_awq()

    def play(machine: SpeedModel, seed: int):
        return run_competition(pool, make_policy("ours"), profile=AIMO2, speed=machine, rng=random.Random(seed),
                               prior=model)

    def work(b) -> int:  # the worst case the bank allowed: samples x tokens
        return b.n_samples * b.max_tokens

    overruns = 0
    for seed in range(40):
        fast, slow = play(model, seed), play(model.scaled(3.0), seed)
        assert slow.throughput_scale == pytest.approx(3.0, rel=0.05) and fast.throughput_scale == pytest.approx(1.0, rel=0.05)
        assert sum(map(work, slow.budgets[5:])) < sum(map(work, fast.budgets[5:]))
        overruns += slow.call_overrun or slow.total_overrun
    assert overruns == 0


# --- 6. normalisation and token counting run off the event loop ------------------------------------------


class _SlowProfile(Profile):
    """Normalising an answer takes 2 s (sympy on a nasty expression)."""

    def to_answer(self, text):  # type: ignore[override]
        time.sleep(2.0)
        return super().to_answer(text)


def _realtime(problem: str, texts: list[str]) -> ReplayEngine:
    return ReplayEngine({problem: texts}, ReplayConfig(realtime=True, speedup=2000), clock=RealClock())


@pytest.mark.slow
def test_a_two_second_normalisation_does_not_delay_the_deadline() -> None:
    problem = "Sum the digits."
    engine = _realtime(problem, ["\\boxed{5}"] * 3)
    slow = _SlowProfile(**{k: getattr(AIMO2, k) for k in AIMO2.__dataclass_fields__})
    cfg = SolverConfig(n_samples=3, max_tokens=200, prompts=(COT,), abort_grace=0.2)

    async def run() -> float:
        t0 = time.monotonic()
        await Solver(engine, cfg, profile=slow).solve("d", problem, deadline=engine.clock.now() + 0.8)
        return time.monotonic() - t0

    assert asyncio.run(run()) < 1.6  # the deadline (0.8 s) + grace, not 3 x 2 s of blocked event loop


class _SlowCounter(ReplayEngine):
    """Counting the tokens of a tool output takes 2 s (a slow tokenizer)."""

    def count_tokens(self, text: str) -> int:
        if text.lstrip().startswith("```output"):  # the output block the solver appends after a code call
            time.sleep(2.0)
        return super().count_tokens(text)


@pytest.mark.slow
def test_token_counting_does_not_stall_the_deadline(tmp_path: Path) -> None:
    problem = "Multiply six by seven."
    engine = _SlowCounter({problem: [CODE_THEN_MORE]}, ReplayConfig(realtime=True, speedup=200), clock=RealClock())
    cfg = SolverConfig(n_samples=1, max_tokens=100_000, prompts=(TIR,), stop_after_reasoning=False,
                       repetition_repeats=0, abort_grace=0.2)

    async def run() -> float:
        with Sandbox(workers=1, timeout=5) as sb:
            t0 = time.monotonic()
            await Solver(engine, cfg, sandbox=sb).solve("m", problem, deadline=engine.clock.now() + 1.0)
            return time.monotonic() - t0

    assert asyncio.run(run()) < 1.8


# --- 7. the context check uses the longest prompt of the mix ----------------------------------------------


LONG = PromptTemplate(name="long", kind="cot", user="{problem}\n\n" + "Think carefully about every case. " * 60)


@pytest.mark.parametrize("order", ["long first", "long last"])
def test_the_context_check_uses_every_prompt_of_the_mix(order: str) -> None:
    problem = "Find the remainder."
    engine = ReplayEngine({problem: ["\\boxed{3}"] * 4}, ReplayConfig(max_model_len=200))
    prompts = (LONG, COT) if order == "long first" else (COT, LONG)
    result = asyncio.run(Solver(engine, SolverConfig(n_samples=4, max_tokens=100, prompts=prompts)).solve("r", problem))
    long_samples = [s for s in result.samples if s.prompt == "long"]
    assert result.answer == 3  # the prompts that fit still run
    assert result.samples_finished == 2  # the ones that cannot are not counted as finished abstentions
    assert all(s.finish_reason == "error" and "does not fit" in (s.error or "") for s in long_samples)


# --- the same run config for dry-run and predict -----------------------------------------------------------


def test_the_dry_run_is_the_submission_config_plus_overrides(tmp_path: Path) -> None:
    from kit.cli import build_parser, dryrun_config

    config = tmp_path / "build.yaml"
    config.write_text("submission:\n  profile: aimo3\n  policy: equal\n  total_seconds: 1200\n"
                      "  solver:\n    n_samples: 6\n    seed: 5\nkaggle: {}\n")
    args = build_parser().parse_args(["dryrun", "--config", str(config), "--samples", "3"])
    cfg = dryrun_config(args)
    assert (cfg.profile.name, cfg.policy, cfg.total_seconds) == ("aimo3", "equal", 1200.0)  # from the file
    assert (cfg.solver.n_samples, cfg.solver.seed) == (3, 5)  # overridden / kept
    assert json.loads(json.dumps(cfg.solver.sandbox.preload))  # plain data, as the notebook embeds it


def test_sandbox_problems_reach_the_run_records(tmp_path: Path) -> None:
    from kit.runtime.sandbox.pool import SandboxConfig
    from kit.sim.replay import engine_factory

    solver = SolverConfig(n_samples=2, max_tokens=500, prompts=(TIR,), sandbox=SandboxConfig(
        preload=("math", "no_such_module_for_the_sandbox")))
    cfg = SubmissionConfig(engine="replay", solver=solver, records_dir=str(tmp_path), total_seconds=3600.0).resolve()
    predict = build_predict(cfg, engine_factory=engine_factory(cfg), started_at=time.time())
    try:
        predict("x", "Find x.")
    finally:
        predict.close()
    warnings = _events(tmp_path / "records.jsonl", "warning")
    assert any(w["what"] == "sandbox preload" and "no_such_module_for_the_sandbox" in w["error"] for w in warnings)
