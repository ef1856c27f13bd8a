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

from kit.offline.runs import load_pool_run, load_records_run
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.schedule import Budget, Outcome, Policy, TimeBank, make_policy
from kit.runtime.throughput import SpeedModel
from kit.runtime.tokens import ApproxTokenizer
from kit.runtime.voting import Ballot, StopRules, Vote


@dataclass(frozen=True)
class SimProblem:
    pid: str
    gold: int | None
    samples: tuple[tuple[int | None, int], ...]
    """(normalised answer or None, generated tokens) of each recorded sample."""
    prompt_tokens: int = 200
    text: str = field(default="", repr=False)
    """The problem statement, for hooks that look at it (the time bank's difficulty predictor); "" when
    the source has none."""

    @property
    def accuracy(self) -> float:
        return sum(a == self.gold for a, _ in self.samples) / len(self.samples)


# --- pools -----------------------------------------------------------------------------------------


def pool_from_traces(pool: str | Path, profile: Profile | str | None = None) -> list[SimProblem]:
    """Problems of a recorded trace pool, read by :func:`kit.offline.runs.load_pool_run` (answers normalised
    for the profile; approximate token counts, as the replay engine counts)."""
    tok = ApproxTokenizer()
    return [SimProblem(p.problem_id, p.gold, tuple((s.answer, max(s.tokens, 1)) for s in p.samples),
                       tok.count(p.problem) + 60, text=p.problem)
            for p in load_pool_run(pool, profile=profile).problems]


def pool_from_records(path: str | Path, profile: Profile | str | None = None, *,
                      texts: Mapping[str, str] | None = None) -> list[SimProblem]:
    """Problems of our own run records (finished samples only; read and validated by
    :func:`kit.offline.runs.load_records_run`). :attr:`SimProblem.text` is the recorded statement unless
    ``texts`` (problem id → statement) gives one."""
    prof = get_profile(profile)
    return [SimProblem(p.problem_id, p.gold, tuple((s.answer, max(s.tokens, 1)) for s in p.done), text=p.problem)
            for p in load_records_run(path, texts=texts).problems
            if p.done and p.gold is not None and prof.in_range(p.gold)]


@dataclass(frozen=True)
class SyntheticSpec:
    """A pool calibrated to published figures for an R1-distill-class model on AIME-level problems:
    pass@1 ≈ 0.34 spread over problems (many near 0, some easy), correct samples shorter than wrong
    ones (median ≈ 4.3k vs ≈ 9.0k tokens), wrong answers partly concentrated on a distractor."""

    problems: int = 60
    samples: int = 32
    accuracy_beta: tuple[float, float] = (0.45, 0.85)
    correct_median: float = 4300.0
    wrong_median: float = 9000.0
    length_sigma: float = 0.55
    max_tokens: int = 32_000
    distractor_share: float = 0.35
    no_answer_share: float = 0.1
    seed: int = 0


def pool_synthetic(spec: SyntheticSpec = SyntheticSpec()) -> list[SimProblem]:
    rng = random.Random(spec.seed)
    out = []
    for k in range(spec.problems):
        p = rng.betavariate(*spec.accuracy_beta)
        gold = rng.randrange(1000)
        distractor = (gold + rng.randrange(1, 1000)) % 1000
        rows = []
        for _ in range(spec.samples):
            if rng.random() < p:
                tokens = int(rng.lognormvariate(math.log(spec.correct_median), spec.length_sigma))
                answer: int | None = gold
            else:
                tokens = int(rng.lognormvariate(math.log(spec.wrong_median), spec.length_sigma))
                u = rng.random()
                answer = None if u < spec.no_answer_share else (
                    distractor if u < spec.no_answer_share + spec.distractor_share else rng.randrange(1000))
            if tokens >= spec.max_tokens:
                tokens, answer = spec.max_tokens, None
            rows.append((answer, max(tokens, 1)))
        out.append(SimProblem(f"syn{k}", gold, tuple(rows)))
    return out


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
    done = len(lengths)
    lengths += [pos] * (n - done)  # still running when it ended: cut where the batch was
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
    throughput_scale: float = 1.0
    """What the bank had learnt at the end: measured / predicted seconds."""


def run_competition(pool: Sequence[SimProblem], policy: Policy, *, profile: Profile, speed: SpeedModel,
                    rng: random.Random, n_problems: int = 50, startup_seconds: float = 600.0,
                    overhead_seconds: float = 2.0, slowdown: Callable[[float], float] | None = None,
                    prior: SpeedModel | None = None) -> CompetitionResult:
    """One simulated run: problems in random order, the bank's budgets, races, answers.

    ``speed`` is the machine; ``prior`` what the time bank believes at the start (an engine preset's speed
    model; None: the machine's own). ``slowdown(t)`` multiplies step times from run time ``t`` on
    (throughput dropping mid-run).
    """
    problems = [rng.choice(pool) for _ in range(n_problems)]
    rng.shuffle(problems)
    max_samples = min(len(p.samples) for p in pool)
    bank = TimeBank(policy, profile, start=0.0, startup_seconds=startup_seconds, n_problems=n_problems,
                    max_samples=max_samples, speed=prior or speed)
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
    return CompetitionResult(score, now, rows, call_overrun, now > profile.total_seconds, budgets,
                             bank.throughput.scale)


# --- the oracle ------------------------------------------------------------------------------------


@dataclass
class Oracle:
    """Upper bound: knows each problem's true per-sample accuracy. A problem none of whose samples is
    ever right is answered at once (no policy can win it by voting), and the time it would have used
    goes to the others; otherwise it plays like ``ours`` with the richest budgets."""

    base: Any = field(default_factory=lambda: make_policy("ours"))
    name: str = "oracle"

    def budget(self, state: Any, now: float, problem: Any) -> Budget:
        b = self.base.budget(state, now, problem)
        if isinstance(problem, SimProblem) and problem.accuracy == 0.0:
            return Budget(now, b.n_samples, b.max_tokens, b.rules, skip=True)
        return b

    def report(self, outcome: Outcome) -> None:
        self.base.report(outcome)

    def skips(self, problem: Any) -> bool:
        return isinstance(problem, SimProblem) and problem.accuracy == 0.0


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
    per_problem_seconds: list[float] = field(default_factory=list)

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "per_problem_seconds"}


def monte_carlo(pool: Sequence[SimProblem], policy_factory: Callable[[], Policy], *, runs: int,
                profile: Profile | str | None = None, speed: SpeedModel | None = None, seed: int = 0,
                n_problems: int = 50, startup_seconds: float = 600.0,
                slowdown: Callable[[float], float] | None = None, prior: SpeedModel | None = None) -> PolicyReport:
    """``runs`` competitions with common random numbers (the same seeds for every policy); ``prior`` as in
    :func:`run_competition`."""
    prof = get_profile(profile)
    sp = speed or SpeedModel.l4x4_7b_awq()
    scores, seconds, overruns, per_problem = [], [], 0, []
    name = ""
    for k in range(runs):
        policy = policy_factory()
        name = policy.name
        res = run_competition(pool, policy, profile=prof, speed=sp, rng=random.Random(seed * 100_003 + k),
                              n_problems=n_problems, startup_seconds=startup_seconds, slowdown=slowdown,
                              prior=prior)
        scores.append(res.score)
        seconds.append(res.seconds)
        overruns += res.call_overrun or res.total_overrun
        if k < 50:
            per_problem.extend(s for s, _ in res.per_problem)
    mean = statistics.fmean(scores)
    half = 1.96 * statistics.stdev(scores) / math.sqrt(runs) if runs > 1 else 0.0
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return PolicyReport(name, mean, mean - half, mean + half, statistics.fmean(seconds), p99, overruns,
                        per_problem_seconds=per_problem)


def compare(pool: Sequence[SimProblem], names: Sequence[str], *, runs: int, seed: int = 0,
            profile: Profile | str | None = None, speed: SpeedModel | None = None,
            n_problems: int = 50, startup_seconds: float = 600.0,
            extra: Sequence[Callable[[], Policy]] = ()) -> list[PolicyReport]:
    """Every named policy, then the ``extra`` policy factories (e.g. ``ours`` with a difficulty hook),
    plus the oracle, on the same simulated competitions."""
    reports = []
    factories: list[Callable[[], Policy]] = [lambda n=name: make_policy(n) for name in names]
    for factory in [*factories, *extra, Oracle]:
        reports.append(monte_carlo(pool, factory, runs=runs, profile=profile, speed=speed, seed=seed,
                                   n_problems=n_problems, startup_seconds=startup_seconds))
    oracle = reports[-1].expected_score
    for r in reports:
        r.oracle_fraction = r.expected_score / oracle if oracle > 0 else float("nan")
    return reports


# --- command line ----------------------------------------------------------------------------------


def load_pool_arg(pool: str, profile: Profile | str | None = None, seed: int = 0) -> list[SimProblem]:
    """``synthetic``, a bundled trace pool name, a trace file/folder, or a run-records jsonl."""
    if pool == "synthetic":
        return pool_synthetic(SyntheticSpec(seed=seed))
    path = Path(pool)
    if path.is_file() and path.name.startswith("records"):
        return pool_from_records(path, profile)
    return pool_from_traces(pool, profile)


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
