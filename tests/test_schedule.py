"""Time bank guarantees and the competition simulator (against the real solver on the replay engine)."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from kit.runtime.profiles import get_profile
from kit.runtime.prompts import COT
from kit.runtime.run_config import STACKS
from kit.runtime.schedule import POLICIES, Budget, Outcome, TimeBank, make_policy
from kit.runtime.solver import Solver, SolverConfig, sample_seed
from kit.runtime.throughput import SpeedModel
from kit.runtime.voting import StopRules
from kit.sim.replay import ReplayConfig, ReplayEngine
from kit.sim.simulate import (
    SimProblem,
    compare,
    monte_carlo,
    pool_from_records,
    pool_from_traces,
    pool_synthetic,
    race,
    run_competition,
)

AIMO2 = get_profile("aimo2")
SPEED = SpeedModel.l4x4_7b_awq()
ALL = list(POLICIES)


def _policy(name: str):
    return make_policy(name)


@pytest.fixture(scope="module")
def sky() -> list[SimProblem]:
    return pool_from_traces("skythought_aime24")


def _hard_pool() -> list[SimProblem]:
    """Every problem hard: long samples, almost never right, answers all different."""
    rng = random.Random(1)
    return [SimProblem(f"h{k}", 7, tuple((rng.randrange(1000), rng.randrange(20_000, 40_000)) for _ in range(32)))
            for k in range(20)]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("scenario", "kwargs"),
    [
        ("every problem hard", {}),
        ("throughput drops 5x after an hour", {"slowdown": lambda t: 5.0 if t > 3600 else 1.0}),
        ("start-up eats 20 minutes", {"startup_seconds": 1200.0}),
        ("engine stalls (100x slower)", {"slowdown": lambda t: 100.0}),
    ],
)
def test_deadlines_hold_under_adversarial_runs(name: str, scenario: str, kwargs: dict) -> None:
    pool = _hard_pool()
    for k in range(15):
        res = run_competition(pool, _policy(name), profile=AIMO2, speed=SPEED, rng=random.Random(k), **kwargs)
        assert not res.call_overrun, (name, scenario)
        assert not res.total_overrun and res.seconds <= AIMO2.total_seconds, (name, scenario, res.seconds)
        assert all(s <= AIMO2.per_call_seconds for s, _ in res.per_problem)


@pytest.mark.slow
def test_no_overruns_in_a_thousand_competitions(sky) -> None:
    for name in ("ours", "linspace"):
        report = monte_carlo(sky, lambda n=name: _policy(n), runs=1000, speed=SpeedModel.l4x4_14b_awq())
        assert report.overruns == 0
        assert report.p99_seconds <= AIMO2.total_seconds


def test_bank_clamps_any_policy() -> None:
    class Greedy:
        name = "greedy"

        def budget(self, state, now, problem):
            return Budget(now + 1e9, 1000, 10**6, StopRules())

        def report(self, outcome):
            pass

    bank = TimeBank(Greedy(), AIMO2, start=100.0, startup_seconds=300.0, safety_seconds=120.0, max_samples=32)
    b = bank.next_budget(400.0)
    assert b.deadline == 400.0 + 1800 - 30  # per-call limit minus the call margin
    assert b.n_samples == 32 and not b.skip
    near_end = bank.state.end - 600
    assert bank.next_budget(near_end).deadline == bank.state.end  # total limit
    assert bank.next_budget(bank.state.end - 0.5).skip  # past the cutoff: answer at once
    assert bank.next_budget(bank.state.end + 100).skip
    with pytest.raises(ValueError, match="total_seconds"):
        TimeBank(Greedy(), AIMO2, start=0.0, total_seconds=0)
    with pytest.raises(ValueError, match="unknown schedule policy"):
        make_policy("yolo")


def test_aimo3_baseline_is_the_public_clamp() -> None:
    aimo3 = get_profile("aimo3")
    policy = make_policy("aimo3_baseline")
    bank = TimeBank(policy, aimo3, start=0.0, total_seconds=18_000, safety_seconds=0.0, n_problems=50)
    cases = [(0, 0.0, 900.0),          # 18000 − 49·300 = 3300 → capped at 900
             (40, 18_000 - 3300, 600.0),  # 10 left with 3300 s: 3300 − 9·300 = 600
             (45, 18_000 - 1600, 400.0),  # 5 left with 1600 s: 1600 − 4·300 = 400
             (47, 18_000 - 700, 300.0)]   # 3 left with 700 s: below the base → 300 (the bank still clamps)
    for done, now, seconds in cases:
        bank.state.done = done
        b = policy.budget(bank.state, now, None)
        assert b.deadline - now == pytest.approx(seconds), (done, now)
        assert b.n_samples == 8 and b.rules.agreements[0].describe() == "4 votes"
        assert b.rules.weighting.confidence == "mean"
    assert bank.next_budget(18_000 - 100).deadline == pytest.approx(18_000)  # never past the total
    with pytest.raises(ValueError, match="base <= high"):
        make_policy("aimo3_baseline", base=600.0, high=300.0)


def test_carry_over() -> None:
    ours = make_policy("ours")
    bank = TimeBank(ours, AIMO2, start=0.0, n_problems=50, max_samples=32)
    first = bank.next_budget(0.0)
    bank.record(Outcome(30.0, 10_000, "agreement", 4, first.n_samples))
    fast = bank.next_budget(30.0).deadline - 30.0
    slow_bank = TimeBank(make_policy("ours"), AIMO2, start=0.0, n_problems=50, max_samples=32)
    slow_bank.next_budget(0.0)
    slow_bank.record(Outcome(900.0, 10_000, "deadline", 2, first.n_samples))
    slow = slow_bank.next_budget(900.0).deadline - 900.0
    assert fast > slow  # time a fast problem left unused is there for the next one
    equal = make_policy("equal")
    eb = TimeBank(equal, AIMO2, start=0.0, n_problems=50)
    d1 = eb.next_budget(0.0).deadline
    eb.record(Outcome(10.0, 1, "agreement", 4, 16))
    assert eb.next_budget(10.0).deadline - 10.0 == pytest.approx(d1)  # no carry-over by design


def test_ours_adapts_its_budgets_to_the_measured_throughput() -> None:
    lengths = (6000,) * 16
    predicted = SPEED.lockstep_seconds(lengths, 250)

    def after(ratio: float) -> tuple[TimeBank, float]:
        """A bank after one problem that took ``ratio`` x the model's time, and its learnt scale."""
        bank = TimeBank(make_policy("ours"), AIMO2, start=0.0, n_problems=50, max_samples=32, speed=SPEED)
        bank.next_budget(0.0)
        bank.record(Outcome(predicted * ratio, sum(lengths), "agreement: 4 of the first 4", 16, 16,
                            lengths=lengths, prompt_tokens=250))
        return bank, bank.throughput.scale

    (fast, scale_1), (slow, scale_3) = after(1.0), after(3.0)
    assert scale_1 == pytest.approx(1.0) and scale_3 == pytest.approx(3.0)
    work = {}
    for now in range(0, int(fast.state.end), 600):  # the same moments for both: only the throughput differs
        a, b = fast.next_budget(float(now)), slow.next_budget(float(now))
        work[now] = (a.n_samples * a.max_tokens, b.n_samples * b.max_tokens)
    assert all(s <= f for f, s in work.values())
    assert any(s < f for f, s in work.values())  # a problem that ran 3x slow shrinks later rungs


def test_difficulty_hook_scales_the_allowance() -> None:
    def budget_for(factor: float) -> float:
        p = make_policy("ours", difficulty=lambda problem: factor)
        bank = TimeBank(p, AIMO2, start=0.0, n_problems=50)
        return bank.next_budget(0.0, "some problem").deadline

    assert budget_for(2.0) > budget_for(1.0) > budget_for(0.5)


def test_simulation_is_deterministic_for_a_seed(sky) -> None:
    a = monte_carlo(sky, lambda: make_policy("ours"), runs=20, seed=3)
    b = monte_carlo(sky, lambda: make_policy("ours"), runs=20, seed=3)
    c = monte_carlo(sky, lambda: make_policy("ours"), runs=20, seed=4)
    assert a.row() == b.row()
    assert a.row() != c.row()


@pytest.mark.slow
def test_ours_beats_the_baselines_on_two_pools(sky) -> None:
    """R1-style pools, ours calibrated as the r1 stack calibrates it (finishing first says "right")."""
    for pool in (sky, pool_synthetic()):
        reports = {r.policy: r for r in compare(pool, ["ours", "second_place", "linspace", "equal"], runs=300,
                                                params={"ours": STACKS["r1"].policy_params})}
        ours = reports["ours"]
        for name in ("second_place", "linspace", "equal"):
            assert ours.ci_low > reports[name].ci_high, (name, ours.row(), reports[name].row())
        assert ours.oracle_fraction <= 1.0 + 1e-9
        assert all(r.overruns == 0 for r in reports.values())


def test_ours_gives_a_split_quorum_to_its_first_finisher() -> None:
    """The quorum votes among the first finishers because short samples are right more often; when they all
    disagree the first of them wins, whatever the answers' sizes (a numeric tie-break would pick at random)."""
    bank = TimeBank(make_policy("ours", STACKS["r1"].policy_params), AIMO2, start=0.0, max_samples=8)
    b = bank.next_budget(0.0)
    assert b.n_samples == 8 and b.rules.quorum == 4
    for answers in ((5, 900, 400, 60), (900, 5, 400, 60), (400, 60, 900, 5)):
        draws = [(a, 1000 + 100 * i) for i, a in enumerate(answers)] + [(7, 5000 + i) for i in range(5)]
        r = race(draws, max_tokens=12_000, seconds=1e9, rules=b.rules, speed=SPEED)
        assert r.reason.startswith("quorum") and r.answer == answers[0], (answers, r)


@pytest.mark.slow
def test_family_redraws_synthetic_problems_but_not_recorded_ones() -> None:
    from kit.sim.pools import family

    first, other = family("aimo2"), family("aimo2", redraw=1)
    assert first.keys() == other.keys()
    assert first["skythought_aime24"]() == other["skythought_aime24"]()
    a, b = first["syn-hard"](), other["syn-hard"]()
    assert len(a) == len(b) and a != b and first["syn-hard"]() == a  # other problems, same shape, reproducible
    assert len(a[0].samples) == len(b[0].samples)
    assert family("aimo3", redraw=2)["syn-aimo3"]() != family("aimo3")["syn-aimo3"]()
    # the stress test: wrong samples as long as correct ones, so finishing first says nothing
    flat = family("aimo2", separation=1.0)["syn-r1-32"]()
    right = [t for p in flat for a, t in p.samples if a == p.gold and t < 32_000]
    wrong = [t for p in flat for a, t in p.samples if a != p.gold and t < 32_000]
    assert 0.9 < statistics.median(wrong) / statistics.median(right) < 1.1
    normal = first["syn-r1-32"]()
    assert statistics.median(t for p in normal for a, t in p.samples if a != p.gold) > 1.8 * statistics.median(
        t for p in normal for a, t in p.samples if a == p.gold)


@pytest.mark.slow
def test_the_oracle_bounds_every_policy_in_every_run(sky) -> None:
    """The timed bound (kit.sim.bounds) is >= every policy's score competition by competition, on recorded and
    synthetic pools of several shapes, on fast and slow hardware, and on the AIMO3 pool."""
    from kit.sim.pools import AIMO3_SPEC, SYNTHETIC_SHAPES
    from kit.sim.simulate import bound_report

    cases = [(sky, "aimo2", SPEED), (sky, "aimo2", SpeedModel.l4x4_14b_awq()),
             (_hard_pool(), "aimo2", SpeedModel.l4x4_14b_awq()),
             (pool_synthetic(AIMO3_SPEC), "aimo3", SpeedModel.h100_gpt_oss_120b())]
    cases += [(pool_synthetic(SYNTHETIC_SHAPES[name]), "aimo2", SpeedModel.l4x4_14b_awq())
              for name in ("syn-r1-8", "syn-long", "syn-short")]
    for pool, profile, speed in cases:
        bound = bound_report(pool, runs=12, profile=profile, speed=speed)
        for name in POLICIES:
            scores = monte_carlo(pool, lambda n=name: make_policy(n), runs=12, profile=profile, speed=speed).scores
            assert all(b >= s for b, s in zip(bound.scores, scores, strict=True)), (name, profile, bound.scores, scores)


def test_bounds_on_hand_made_problems() -> None:
    from kit.sim.bounds import least_cost, oracle_score, untimed_majority

    speed = SpeedModel(step_s=1.0)  # one second per decode step, nothing else
    easy = SimProblem("e", 7, ((7, 10), (3, 5)))  # shortest correct sample: 10 tokens = 10 s alone
    fallback = SimProblem("f", AIMO2.fallback_answer, ((5, 100),))  # the fallback answer is right: free
    never = SimProblem("n", 9, ((1, 3), (2, 4)))  # no sample right: out of reach
    slow = SimProblem("s", 4, ((4, 40), (4, 50)))
    assert [least_cost(p, profile=AIMO2, speed=speed) for p in (easy, fallback, never, slow)] == [10.0, 0.0,
                                                                                                   float("inf"), 40.0]
    assert oracle_score([easy, fallback, never, slow], profile=AIMO2, speed=speed, available_seconds=45).score == 2
    assert oracle_score([easy, fallback, never, slow], profile=AIMO2, speed=speed, available_seconds=50).score == 3
    assert oracle_score([slow], profile=AIMO2, speed=speed, available_seconds=1e9, per_call_seconds=30).score == 0
    assert untimed_majority([easy, never, slow]) == pytest.approx(2 / 3)  # easy: 7 vs 3, tie -> larger (7)


def test_the_run_twice_rule_gives_a_penalized_score() -> None:
    from kit.sim.pools import AIMO3_SPEC

    pool = pool_synthetic(AIMO3_SPEC)
    r = monte_carlo(pool, lambda: make_policy("aimo3_baseline"), runs=30, profile="aimo3",
                    speed=SpeedModel.h100_gpt_oss_120b())
    assert r.penalized_score is not None and r.penalized_std > 0
    # two independent runs of the same problems: their mean has the single run's expectation, less spread
    assert abs(r.penalized_score - r.expected_score) < 1.5 and r.penalized_std <= statistics.stdev(r.scores) + 1e-9


def test_race_matches_the_real_solver_on_the_replay_engine(sky) -> None:
    """The simulator's analytic race and the real solver agree on decision, answer, samples and time."""
    from kit.offline.traces import load_pool

    recorded: dict[str, list] = {}
    for s in load_pool("skythought_aime24"):
        recorded.setdefault(s.problem_id, []).append(s)
    rules = StopRules()
    checked = 0
    for prob in sky[:8]:
        texts = recorded[prob.pid]
        engine = ReplayEngine.from_samples(texts, ReplayConfig(chunk_tokens=64, speed=SPEED))
        cfg = SolverConfig(n_samples=11, max_tokens=200_000, prompts=(COT,), stop_after_reasoning=False,
                           repetition_repeats=0, rules=rules)
        result = asyncio.run(Solver(engine, cfg).solve(prob.pid, texts[0].problem))
        order = [sample_seed(0, prob.pid, i) % 11 for i in range(11)]
        draws = [prob.samples[j] for j in order]
        prompt_tokens = engine.count_tokens(engine.chat_prompt(COT.messages(texts[0].problem, AIMO2.modulus_wording)))
        r = race(draws, max_tokens=200_000, seconds=1e9, rules=rules, speed=SPEED, prompt_tokens=prompt_tokens)
        assert r.reason == result.reason
        assert r.answer == result.answer or (r.answer is None and result.answer == AIMO2.fallback_answer)
        assert r.finished == result.samples_finished
        assert r.seconds == pytest.approx(result.seconds, rel=0.05)
        checked += 1
    assert checked == 8


def test_pool_from_our_records(tmp_path: Path) -> None:
    from kit.runtime.records import RunRecorder

    with RunRecorder(tmp_path / "records.jsonl") as rec:
        for pid, gold in (("a", 5), ("b", 7)):
            for i in range(4):
                rec.write("sample", problem_id=pid, index=i, answer=gold if i % 2 else 1, tokens=100 * (i + 1),
                          finish_reason="stop", text="...")
            rec.write("sample", problem_id=pid, index=9, answer=3, tokens=5, finish_reason="abort", text="...")
            rec.write("problem", problem_id=pid, gold=gold, answer=gold)
    pool = pool_from_records(tmp_path / "records.jsonl")
    assert [(p.pid, p.gold, len(p.samples)) for p in pool] == [("a", 5, 4), ("b", 7, 4)]
    assert pool[0].accuracy == 0.5


@pytest.mark.slow
def test_simulate_cli_writes_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    png = tmp_path / "sim.png"
    proc = subprocess.run([sys.executable, "-m", "kit", "simulate", "--runs", "30", "--json", str(out),
                           "--plot", str(png)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [r["policy"] for r in rows] == ["ours", "second_place", "linspace", "equal", "oracle", "untimed majority"]
    for r in rows:
        assert set(r) == {"policy", "expected_score", "ci_low", "ci_high", "mean_seconds", "p99_seconds",
                          "overruns", "oracle_fraction", "penalized_score", "penalized_std"}
        assert r["ci_low"] <= r["expected_score"] <= r["ci_high"]
        assert r["penalized_score"] is None  # AIMO2 runs once
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "ours" in proc.stdout and "of oracle" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "kit", "simulate", "--hardware", "abacus"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown hardware" in bad.stderr


@pytest.mark.slow
def test_dryrun_respects_a_short_time_limit(tmp_path: Path) -> None:
    from kit.cli import main

    assert main(["dryrun", "--engine", "replay", "--time-limit", "10m", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problems"] == 30
    assert summary["seconds"] <= 600
    skipped = [r for r in summary["rows"] if r["reason"] == "skipped"]
    assert all(r["answer"] == AIMO2.fallback_answer and r["tokens"] == 0 for r in skipped)
    assert sum(r["seconds"] for r in summary["rows"]) <= 600
