"""Whole-competition simulator: test a time policy on thousands of simulated 5-hour runs in seconds.

A simulated competition draws 50 problems from a pool of recorded problems (each with its samples'
answers and token counts), in random order; for each, the :class:`~kit.runtime.schedule.TimeBank` asks the
policy for a budget; the samples race on a hardware throughput model (the replay engine's
:class:`~kit.runtime.throughput.SpeedModel`: all samples decode together, each step's time depends on the
batch and its context), and after every finished sample the solver's own ballot
(:class:`kit.runtime.voting.Ballot`) decides whether to stop and what to answer — no re-implementation,
and ``tests/test_simulate.py`` checks the race against the real solver on the replay engine.

Monte Carlo over orders and sample draws gives each policy's expected score with a 95 % confidence
interval, time used, overruns, and its fraction of the oracle's score.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.runtime.engines.presets import PRESETS
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.schedule import Budget, Outcome, Policy, TimeBank, make_policy
from kit.runtime.solver_config import AIMO3_SOLVER, SolverConfig
from kit.runtime.throughput import SpeedModel
from kit.runtime.voting import Ballot, StopRules, Vote
from kit.sim.bounds import oracle_competition, untimed_majority
from kit.sim.pools import (
    SimProblem,
    SyntheticSpec,
    draw_problems,
    load_pool_arg,
    pool_from_records,
    pool_from_traces,
    pool_synthetic,
)

__all__ = [
    "CompetitionResult", "PolicyReport", "RaceResult", "SimProblem", "SyntheticSpec", "bound_report", "compare",
    "draw_problems", "hardware_max_seqs", "load_pool_arg",
    "monte_carlo", "plot", "pool_from_records", "pool_from_traces", "pool_synthetic", "race", "run_competition",
]

# --- one problem -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaceResult:
    answer: int | None
    seconds: float
    tokens: int
    finished: int
    reason: str
    margin: float
    lengths: tuple[int, ...] = ()
    """Tokens each sample decoded before it finished or was cut (what the time bank's throughput model
    learns from, as from a real run's samples)."""


def race(samples: Sequence[tuple[int | None, int]], *, max_tokens: int, seconds: float, rules: StopRules,
         speed: SpeedModel, prompt_tokens: int = 200) -> RaceResult:
    """Samples decoding together until the vote is decided, all finish, or ``seconds`` run out.

    Exact under the speed model: between two finishes ``n`` sequences advance in lock-step, so the
    segment's time is a closed-form sum; samples longer than ``max_tokens`` are cut there (no answer).
    Votes go through :class:`kit.runtime.voting.Ballot`, as in the solver: the answer a stop names is the
    answer submitted.
    """
    n = len(samples)
    cut = [(min(t, max_tokens), a if t <= max_tokens else None, i) for i, (a, t) in enumerate(samples)]
    # finishing order: shortest first; equal lengths by answer, then sample index (a fixed, total order)
    items = [c[:2] for c in sorted(cut, key=lambda c: (c[0], -1 if c[1] is None else c[1], c[2]))]
    t = speed.prefill_seconds(prompt_tokens)
    pos = 0
    ballot = Ballot(rules)
    lengths: list[int] = []
    active = n
    reason = "all finished"
    for length, answer in items:
        steps = length - pos
        if steps > 0:
            dt = speed.chunk_seconds(active, active * (prompt_tokens + pos), steps)
            if t + dt > seconds:  # the deadline falls inside this segment: the steps that fit before it
                pos += speed.steps_within(active, active * (prompt_tokens + pos), steps, seconds - t)
                t = max(seconds, t)
                reason = "deadline"
                break
            t += dt
            pos = length
        ballot.add(Vote(answer, order=len(ballot.votes), tokens=length))
        lengths.append(length)
        active -= 1
        if active > 0 and ballot.check(active).stop:
            reason = ballot.stopped.reason  # type: ignore[union-attr]
            break
    lengths += [pos] * (n - len(lengths))  # still running when it ended: cut where the batch was
    final = ballot.final()
    answered = [v for v in ballot.votes if v.answer is not None]
    margin = sum(v.answer == final.answer for v in answered) / len(answered) if answered else 0.0
    return RaceResult(final.answer, t, sum(lengths), len(ballot.votes), reason, margin, tuple(lengths))


# --- one competition -----------------------------------------------------------------------------


@dataclass
class CompetitionResult:
    score: int
    seconds: float
    per_problem: list[tuple[float, bool]]
    call_overrun: bool
    total_overrun: bool
    budgets: list[Budget] = field(default_factory=list)
    """The time bank's budget of each problem, in run order."""
    problems: list[SimProblem] = field(default_factory=list)
    """The run's problems, in order."""
    throughput_scale: float = 1.0
    """What the bank had learnt at the end: measured / predicted seconds."""


def hardware_max_seqs(hardware: str) -> int | None:
    """``max_num_seqs`` of the engine preset that names this speed model (``h100-gpt-oss-120b`` → the
    ``h100-gpt-oss`` preset's 8), None when no preset does."""
    return next((p.max_num_seqs for p in PRESETS.values() if p.speed == hardware), None)


def default_max_tokens(profile: Profile) -> int:
    """The token cap of the stack a profile is played with: the gpt-oss solver's 65,536 for AIMO3 (a run twice,
    H100 competition), the R1-style solver's 12,000 otherwise."""
    return (AIMO3_SOLVER if profile.runs_twice else SolverConfig()).max_tokens


def run_competition(pool: Sequence[SimProblem], policy: Policy, *, profile: Profile, speed: SpeedModel,
                    rng: random.Random, n_problems: int = 50, startup_seconds: float = 600.0,
                    overhead_seconds: float = 2.0, slowdown: Callable[[float], float] | None = None,
                    prior: SpeedModel | None = None, problems: Sequence[SimProblem] | None = None,
                    max_tokens: int | None = None, max_num_seqs: int | None = None) -> CompetitionResult:
    """One simulated run: problems in random order, the bank's budgets, races, answers.

    ``speed`` is the machine; ``prior`` what the time bank believes at the start (an engine preset's speed
    model; None: the machine's own). ``slowdown(t)`` multiplies step times from run time ``t`` on
    (throughput dropping mid-run). ``problems``: the run's problems in order (the private leaderboard's
    second run of the same set); None: drawn from ``pool`` with ``rng``, which then draws the samples.
    ``max_tokens``: the solver's token cap per sample (None: the profile's stack, :func:`default_max_tokens`).
    ``max_num_seqs``: sequences the engine decodes at once (its KV cache's limit: 8 attempts of 65k tokens for
    gpt-oss-120b on an H100); the bank never plans more samples (None: the pool's sample count).
    """
    problems = draw_problems(pool, rng, n_problems) if problems is None else list(problems)
    n_problems = len(problems)
    max_samples = min(len(p.samples) for p in pool)
    if max_num_seqs is not None:
        max_samples = min(max_samples, max_num_seqs)
    bank = TimeBank(policy, profile, start=0.0, startup_seconds=startup_seconds, n_problems=n_problems,
                    max_samples=max_samples, max_tokens=max_tokens or default_max_tokens(profile),
                    speed=prior or speed)
    budgets: list[Budget] = []
    now = startup_seconds
    score = 0
    rows = []
    call_overrun = False
    for prob in problems:
        b: Budget = bank.next_budget(now, prob)
        budgets.append(b)
        if b.skip:
            answer = profile.fallback_answer
            r = RaceResult(answer, 0.0, 0, 0, "skip", 0.0)
        else:
            # distinct recorded samples: drawing one twice would fake agreement between "samples"
            draws = rng.sample(prob.samples, b.n_samples)
            sp = speed if slowdown is None else speed.scaled(slowdown(now))
            r = race(draws, max_tokens=b.max_tokens, seconds=b.deadline - now, rules=b.rules, speed=sp,
                     prompt_tokens=prob.prompt_tokens)
            answer = r.answer if r.answer is not None else profile.fallback_answer
        spent = r.seconds + overhead_seconds
        if profile.per_call_seconds is not None and spent > profile.per_call_seconds:
            call_overrun = True
        now += spent
        correct = prob.gold is not None and answer == prob.gold
        score += correct
        rows.append((spent, correct))
        # the solver's own seconds, as a real run reports them (the call overhead is not generation)
        bank.record(Outcome(r.seconds, r.tokens, r.reason, r.finished, b.n_samples, r.margin, lengths=r.lengths,
                            prompt_tokens=prob.prompt_tokens))
    return CompetitionResult(score, now, rows, call_overrun, now > profile.total_seconds, budgets=budgets,
                             throughput_scale=bank.throughput.scale, problems=problems)


# --- Monte Carlo -----------------------------------------------------------------------------------


@dataclass
class PolicyReport:
    policy: str
    expected_score: float
    ci_low: float
    ci_high: float
    mean_seconds: float
    p99_seconds: float
    overruns: int
    oracle_fraction: float = float("nan")
    """Expected score over the timed bound's (:mod:`kit.sim.bounds`) on the same competitions."""
    per_problem_seconds: list[float] = field(default_factory=list)
    scores: list[int] = field(default_factory=list)
    """Score of each competition, in seed order (the same competitions for every policy)."""
    penalized_score: float | None = None
    """Profiles whose private set runs twice (AIMO3): the expected score of two independent runs of the same
    problems in the same order, a problem scoring 1 when both are right, 0.5 when one is, 0 otherwise."""
    penalized_std: float | None = None
    """Its spread (standard deviation over competitions)."""

    def row(self) -> dict:
        """The table row (JSON-safe: a figure that does not apply, like a bound's seconds, is None)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in self.__dict__.items()
                if k not in ("per_problem_seconds", "scores")}


def monte_carlo(pool: Sequence[SimProblem], policy_factory: Callable[[], Policy], *, runs: int,
                profile: Profile | str | None = None, speed: SpeedModel | None = None, seed: int = 0,
                n_problems: int = 50, startup_seconds: float = 600.0,
                slowdown: Callable[[float], float] | None = None, prior: SpeedModel | None = None,
                second_run: bool | None = None, max_num_seqs: int | None = None) -> PolicyReport:
    """``runs`` competitions with common random numbers (the same seeds for every policy); ``prior`` as in
    :func:`run_competition`. For a profile whose private set runs twice (AIMO3) each competition is played a
    second time on the same problems with other sample draws: :attr:`PolicyReport.penalized_score`
    (``second_run`` False skips it, True forces it)."""
    prof = get_profile(profile)
    sp = speed or SpeedModel.l4x4_7b_awq()
    scores, seconds, overruns, per_problem = [], [], 0, []
    penalized: list[float] = []
    name = ""
    for k in range(runs):
        policy = policy_factory()
        name = policy.name
        res = run_competition(pool, policy, profile=prof, speed=sp, rng=random.Random(seed * 100_003 + k),
                              n_problems=n_problems, startup_seconds=startup_seconds, slowdown=slowdown,
                              prior=prior, max_num_seqs=max_num_seqs)
        scores.append(res.score)
        seconds.append(res.seconds)
        overruns += res.call_overrun or res.total_overrun
        if k < 50:
            per_problem.extend(s for s, _ in res.per_problem)
        if prof.runs_twice if second_run is None else second_run:
            again = run_competition(pool, policy_factory(), profile=prof, speed=sp,
                                    rng=random.Random(seed * 100_003 + k + 7_919_000), slowdown=slowdown,
                                    prior=prior, startup_seconds=startup_seconds, problems=res.problems,
                                    max_num_seqs=max_num_seqs)
            overruns += again.call_overrun or again.total_overrun
            penalized.append(sum((a + b) / 2 for (_, a), (_, b) in zip(res.per_problem, again.per_problem,
                                                                       strict=True)))
    report = _summary(name, scores, seconds)
    report.overruns, report.per_problem_seconds = overruns, per_problem
    if penalized:
        report.penalized_score = statistics.fmean(penalized)
        report.penalized_std = statistics.stdev(penalized) if len(penalized) > 1 else 0.0
    return report


def _summary(name: str, scores: Sequence[float], seconds: Sequence[float]) -> PolicyReport:
    """Mean score with its 95 % CI, mean and p99 seconds (no overruns counted yet)."""
    mean = statistics.fmean(scores)
    half = 1.96 * statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return PolicyReport(name, mean, mean - half, mean + half, statistics.fmean(seconds), p99, 0,
                        scores=[int(x) for x in scores])


def bound_report(pool: Sequence[SimProblem], *, runs: int, profile: Profile | str | None = None,
                 speed: SpeedModel | None = None, seed: int = 0, n_problems: int = 50,
                 startup_seconds: float = 600.0) -> PolicyReport:
    """The timed bound (:func:`kit.sim.bounds.oracle_competition`) on the competitions :func:`monte_carlo`
    plays with the same ``seed``: row ``oracle``; ``seconds`` is start-up + the bound's generation time."""
    prof = get_profile(profile)
    sp = speed or SpeedModel.l4x4_7b_awq()
    bounds = [oracle_competition(pool, profile=prof, speed=sp, rng=random.Random(seed * 100_003 + k),
                                 n_problems=n_problems, startup_seconds=startup_seconds) for k in range(runs)]
    report = _summary("oracle", [b.score for b in bounds], [startup_seconds + b.seconds for b in bounds])
    if prof.runs_twice:  # it knows every sample: the second run wins the same problems
        report.penalized_score = report.expected_score
        report.penalized_std = statistics.stdev(report.scores) if runs > 1 else 0.0
    return report


def compare(pool: Sequence[SimProblem], names: Sequence[str], *, runs: int, seed: int = 0,
            profile: Profile | str | None = None, speed: SpeedModel | None = None,
            n_problems: int = 50, startup_seconds: float = 600.0,
            extra: Sequence[Callable[[], Policy]] = (), max_num_seqs: int | None = None,
            params: Mapping[str, Mapping[str, Any]] | None = None) -> list[PolicyReport]:
    """Every named policy (with its ``params``, e.g. ``{"ours": {"finish_signal": -0.2}}``), then the ``extra``
    policy factories (e.g. ``ours`` with a difficulty hook), on the same simulated competitions, then the rows
    ``oracle`` (the timed bound of :mod:`kit.sim.bounds` on those competitions) and ``untimed majority``
    (majority of every recorded sample, ``n_problems`` × its share)."""
    reports = []
    params = params or {}
    factories: list[Callable[[], Policy]] = [lambda n=name: make_policy(n, params.get(n)) for name in names]
    for factory in [*factories, *extra]:
        reports.append(monte_carlo(pool, factory, runs=runs, profile=profile, speed=speed, seed=seed,
                                   n_problems=n_problems, startup_seconds=startup_seconds, max_num_seqs=max_num_seqs))
    bound = bound_report(pool, runs=runs, profile=profile, speed=speed, seed=seed, n_problems=n_problems,
                         startup_seconds=startup_seconds)
    untimed = untimed_majority(pool) * n_problems
    twice = get_profile(profile).runs_twice
    reports += [bound, PolicyReport("untimed majority", untimed, untimed, untimed, float("nan"), float("nan"), 0,
                                    penalized_score=untimed if twice else None, penalized_std=0.0 if twice else None)]
    for r in reports:
        r.oracle_fraction = r.expected_score / bound.expected_score if bound.expected_score > 0 else float("nan")
    return reports


# --- command line ----------------------------------------------------------------------------------


def plot(reports: Sequence[PolicyReport], path: Path, title: str) -> None:
    """Per-problem time distribution of each policy (box plot), with the per-call limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    data = [r.per_problem_seconds or [0.0] for r in reports]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(reports) + 1),
                  [f"{r.policy}\n{r.expected_score:.1f}±{(r.ci_high - r.ci_low) / 2:.1f}" for r in reports])
    ax.set_ylabel("seconds per problem")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
