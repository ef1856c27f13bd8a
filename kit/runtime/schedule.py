"""The run's time bank: how much of the 5 hours each problem gets, and with how many samples.

Problems arrive one at a time in random order; the count (50) is known only by convention; each call
must return within the per-call limit and the whole notebook within the total. A :class:`TimeBank`
tracks the time left and asks a pluggable :class:`Policy` for each problem's :class:`Budget`; whatever
the policy says, the bank clamps the deadline so that neither the per-call limit nor the total limit
can be exceeded (minus safety margins), and past the cutoff it tells the caller to answer at once.

Policies here: ``ours`` (an equalized per-problem cap from the problems so far, more samples when
time is plentiful, a first-finish quorum, give-up on hopeless splits), the public baseline's ``linspace``
deadlines with its "speedrun" downshift, the AIMO2 2nd place's speed levels, the AIMO3 public notebooks'
clamp (``aimo3_baseline``) and a fixed ``equal`` split. The upper bounds they are judged against live in
the simulator (``kit.sim.bounds``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from kit.runtime.config import ConfigError, from_dict
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.throughput import LengthModel, SpeedModel, Throughput
from kit.runtime.voting import (
    SECOND_PLACE_RULES,
    SECOND_PLACE_WEIGHTING,
    Agreement,
    StopRules,
    TieBreak,
    Weighting,
)


@dataclass(frozen=True)
class Budget:
    """What one problem may spend. ``deadline`` is an absolute clock time."""

    deadline: float
    n_samples: int
    max_tokens: int
    rules: StopRules
    skip: bool = False
    """Answer at once with the fallback (no time left)."""


@dataclass(frozen=True)
class Outcome:
    """What a problem cost and how it ended, reported to the bank after every problem."""

    seconds: float
    tokens: int
    reason: str
    samples_finished: int
    n_samples: int
    margin: float = 0.0
    """Vote share of the winning answer among finished samples (0..1)."""
    lengths: tuple[int, ...] = ()
    """Tokens each sample actually decoded (aborted ones up to their abort): what the throughput model
    compares the measured seconds against."""
    prompt_tokens: int = 0

    @classmethod
    def of(cls, result: Any) -> Outcome:
        """The signals of a solver ``ProblemResult``."""
        votes = sum(result.tally.values())
        return cls(result.seconds, result.tokens, result.reason, result.samples_finished, len(result.samples),
                   max(result.tally.values()) / votes if votes else 0.0,
                   lengths=tuple(s.tokens for s in result.samples),
                   prompt_tokens=getattr(result, "prompt_tokens", 0))


@dataclass
class BankState:
    start: float
    end: float
    """Clock time by which every answer must be in (start + total − start-up − safety)."""
    per_call: float | None
    n_problems: int
    max_samples: int = 64
    """Samples one problem can run at once: min(the solver's samples, the engine's ``max_num_seqs``)."""
    max_tokens: int = 12_000
    """Tokens per sample the solver allows (its ``max_tokens``): every policy's token budget. Policies decide
    time, samples and stopping; the token cap is the model's (12k for R1-style on 4×L4, 65k for gpt-oss)."""
    throughput: Throughput = field(default_factory=lambda: Throughput(SpeedModel.l4x4_7b_awq()))
    """The engine's speed model, corrected by every outcome (``TimeBank.record``)."""
    lengths: LengthModel = field(default_factory=LengthModel)
    """How far this run's samples got before their problems stopped, from every outcome."""

    done: int = 0
    spent: float = 0.0
    history: list[Outcome] = field(default_factory=list)

    def left(self, now: float) -> float:
        return max(self.end - now, 0.0)

    @property
    def problems_left(self) -> int:
        """Problems still to come (at least 1: the count is only a convention)."""
        return max(self.n_problems - self.done, 1)


class Policy(Protocol):
    name: str

    def budget(self, state: BankState, now: float, problem: Any) -> Budget: ...

    def report(self, outcome: Outcome) -> None: ...


class TimeBank:
    """Deadlines and budgets for a whole run, with hard guarantees (see module docstring)."""

    def __init__(self, policy: Policy, profile: Profile | str | None = None, *, start: float,
                 total_seconds: float | None = None, startup_seconds: float = 0.0,
                 safety_seconds: float | None = None, call_margin_seconds: float = 30.0,
                 n_problems: int | None = None, max_samples: int = 64, max_tokens: int = 12_000,
                 speed: SpeedModel | None = None) -> None:
        self.profile = get_profile(profile)
        self.policy = policy
        total = self.profile.total_seconds if total_seconds is None else total_seconds
        if total <= 0:
            raise ValueError(f"total_seconds must be > 0, got {total}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.call_margin = call_margin_seconds
        if safety_seconds is None:  # 2 minutes, but never most of a short (dry-run) limit
            safety_seconds = min(120.0, 0.05 * total)
        self.state = BankState(start=start, end=start + total - startup_seconds - safety_seconds,
                               per_call=self.profile.per_call_seconds, n_problems=n_problems or self.profile.n_problems,
                               max_samples=max_samples, max_tokens=max_tokens,
                               throughput=Throughput(speed or SpeedModel.l4x4_7b_awq()))

    @property
    def throughput(self) -> Throughput:
        return self.state.throughput

    def next_budget(self, now: float, problem: Any = None) -> Budget:
        """The next problem's budget; the deadline is clamped to both limits."""
        st = self.state
        b = self.policy.budget(st, now, problem)
        latest = st.end
        if st.per_call is not None:
            latest = min(latest, now + st.per_call - self.call_margin)
        deadline = min(b.deadline, latest)
        if deadline <= now + 1.0:
            return replace(b, deadline=now, skip=True)
        return replace(b, deadline=deadline, n_samples=max(1, min(b.n_samples, st.max_samples)))

    def record(self, outcome: Outcome) -> None:
        """Count the problem as done, charge its time, and correct the throughput model with it."""
        self.state.done += 1
        self.state.spent += outcome.seconds
        self.state.history.append(outcome)
        self.state.throughput.observe(outcome.seconds, outcome.lengths, outcome.prompt_tokens)
        self.state.lengths.observe(outcome.lengths)
        self.policy.report(outcome)


# --- policies --------------------------------------------------------------------------------------

DEFAULT_RULES = StopRules()


@dataclass
class EqualSplit:
    """Every problem gets total/N seconds; time a problem does not use is lost (no carry-over)."""

    n_samples: int = 16
    rules: StopRules = DEFAULT_RULES
    name: str = "equal"
    _share: float | None = None

    def budget(self, state: BankState, now: float, problem: Any) -> Budget:
        if self._share is None:
            self._share = (state.end - state.start) / state.n_problems
        return Budget(now + self._share, self.n_samples, state.max_tokens, self.rules)

    def report(self, outcome: Outcome) -> None:
        pass


@dataclass
class Linspace:
    """The public AIMO2 baseline: absolute deadlines evenly spaced from start to the cutoff (time left
    by a fast problem flows to the next), all samples voted at the end (no early stop), and a
    "speedrun" downshift to fewer samples when the time per remaining problem gets short."""

    n_samples: int = 32
    speedrun_below: float = 240.0
    speedrun_samples: int = 16
    name: str = "linspace"

    def budget(self, state: BankState, now: float, problem: Any) -> Budget:
        span = state.end - state.start
        deadline = state.start + span * (state.done + 1) / state.n_problems
        per_left = state.left(now) / state.problems_left
        n = self.speedrun_samples if per_left < self.speedrun_below else self.n_samples
        rules = StopRules(agreements=(), certain=False)
        return Budget(deadline, n, state.max_tokens, rules)

    def report(self, outcome: Outcome) -> None:
        pass


@dataclass
class SecondPlace:
    """AIMO2 2nd place: "speed level" from the average time left per remaining question (< 300 s → 10
    samples … > 420 s → 17), a per-question cap of 9.5–12 min by level, their agreement rules and
    weighting (0.6 for answers ≤ 20 or multiples of 100)."""

    levels: tuple[tuple[float, int, float], ...] = ((300.0, 10, 570.0), (360.0, 13, 630.0),
                                                    (420.0, 15, 690.0), (float("inf"), 17, 720.0))
    """(time per remaining question below which the level applies, samples, cap seconds)."""
    name: str = "second_place"

    def budget(self, state: BankState, now: float, problem: Any) -> Budget:
        per_left = state.left(now) / state.problems_left
        n, cap = next((n, cap) for below, n, cap in self.levels if per_left < below)
        rules = StopRules(agreements=SECOND_PLACE_RULES, certain=False, weighting=SECOND_PLACE_WEIGHTING)
        return Budget(now + min(cap, max(per_left, 0.0) * 1.6), n, state.max_tokens, rules)

    def report(self, outcome: Outcome) -> None:
        pass


LADDER: tuple[int, ...] = (8, 12, 16, 24, 32)
"""Sample-count rungs of ``ours``, cheapest first."""


def equalized_allowance(history: Sequence[Outcome], share: float) -> float | None:
    """The per-problem cap ``A`` at which the problems seen so far would have used ``share`` seconds each on
    average: ``mean(min(T_i, A)) = share``, with ``T_i`` a problem's natural stop time (its seconds, or at
    least its seconds when the deadline cut it: counted as using all of ``A``). None when even an unlimited
    cap uses less than ``share`` (time does not bind: no cap is needed).

    Why this cap: with a concave return of time per problem and problems alike before they start, the best
    split gives every problem the same cap and lets the early stoppers return their unused time — water
    filling. Time a quick problem leaves is worth spending only where a problem would still use it, and a
    cap higher than this one spends tomorrow's share today (a stretch factor does exactly that when time
    binds)."""
    if not history or share <= 0:
        return None
    natural = [o.seconds for o in history if not o.reason.startswith("deadline")]
    cut = len(history) - len(natural)
    if cut == 0 and statistics.fmean(natural) <= share:
        return None

    def usage(cap: float) -> float:
        return (sum(min(t, cap) for t in natural) + cut * cap) / len(history)

    if usage(share) >= share:  # even the fair share is used up: the cap is the share (usage(A) >= A-ish)
        lo, hi = 0.0, share
    else:
        lo, hi = share, share * 2
        while usage(hi) < share and hi < 1e7:
            hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        if usage(mid) < share:
            lo = mid
        else:
            hi = mid
    return hi


def pressed_rules(n: int) -> tuple[Agreement, ...]:
    """The earlier stops of :attr:`Ours.pressed` for ``n`` samples: the first 3 finishers agree, or an
    answer has half the votes (4 of 8: the AIMO3 notebooks' rule)."""
    return (Agreement(3, 3, "first"), Agreement(max(3, (n + 1) // 2), max(3, (n + 1) // 2), "any"))


@dataclass
class Ours:
    """The value of time: each problem gets the cap at which the run's problems would spend their fair share
    on average, the richest sample rung whose expected time fits that cap, early stop on agreement or
    certainty, a first-finish quorum where the model's finish order has been measured to say "right", and a
    give-up rule for hopeless splits.

    * share = time left / problems left; the allowance is :func:`equalized_allowance` of the problems so far
      (None — time does not bind — or before ``warmup`` problems: ``stretch × share``), never more than what
      leaves ``reserve × share`` for each later problem. Early stoppers lend their unused time to the
      contested problems, but only as much as those would use: when most problems run into their deadline
      the cap falls to the share itself (equal split), when most stop early it rises;
    * samples: the richest rung of ``ladder`` whose *expected* time fits the allowance: the
      samples decode in lock-step until the quorum's share of them has finished, at the length this run's
      samples reached at that share (:class:`~kit.runtime.throughput.LengthModel`; before any problem, spread
      evenly up to max tokens) — time that fixed settings leave unused buys more and longer samples;
    * the throughput model is the bank's (the engine's speed model corrected by every measured problem,
      :class:`~kit.runtime.throughput.Throughput`), so a slower-than-expected machine shrinks the rungs;
    * calibrated on the model's own attempts (:attr:`finish_signal`): where finishing first has been measured
      to say "right" (R1-distill models), vote among the first ``max(quorum_min, quorum × n)`` finishers and
      give ties to the earliest; where it says "wrong" (gpt-oss-120b: quick wrong guesses finish first), no
      quorum and ties to the latest finisher; not measured, neither. While time binds, stop also at the
      earlier agreements of :func:`pressed_rules`; give up after ``hopeless_after`` finished samples with no
      two agreeing;
    * ``difficulty``: optional hook ``problem → factor`` (≈1 for an average problem) scaling the allowance,
      fed by the difficulty predictor of the training kit.
    """

    ladder: tuple[int, ...] = LADDER
    stretch: float = 2.0
    reserve: float = 0.5
    warmup: int = 3
    """Problems seen before the equalized allowance replaces ``stretch × share``."""
    hopeless_after: int | None = 7
    quorum: float | None = 0.25
    """First-finish quorum as a fraction of the samples (None: off): with many samples racing, vote
    among the first quarter to finish (see ``StopRules.quorum``)."""
    quorum_min: int = 4
    """At least this many finishers vote (it decides only below 16 samples: 4 of 8, 4 of 12). Why 4, not
    3: how much finishing first says about being right varies between models, and 3 of 8 leans on it hard —
    with wrong samples only 1.3× as long as right ones it loses 0.4–1.4 problems to the baselines on 8
    samples, where 4 of 8 stays within 0.3 of them; with the family's strong separation 4 costs 0.3–0.6 of
    a 3–4 problem lead (docs/benchmarks.md, issue 15)."""
    prompt_tokens: int = 250
    agreements: tuple[Agreement, ...] = (Agreement(4, 4, "first"), Agreement(5, 6, "upto"),
                                         Agreement(6, 9, "upto"), Agreement(7, 12, "upto"),
                                         Agreement(9, 16, "upto"))
    difficulty: Callable[[Any], float] | None = None
    finish_signal: float | None = None
    """What finishing first says about being right for the model the run plays: first-finish accuracy minus
    a random attempt's, measured on its own attempts (:mod:`kit.offline.finish_order`; ``kit simulate --tune
    --pool LOG`` writes it). None — not measured — leans on nothing. The quorum and the tie-break follow
    from it (:meth:`uses_quorum`, :meth:`tie`): R1-distill pools measure +0.10…+0.35, real gpt-oss-120b
    attempts −0.24 (docs/design.md "AIMO3")."""
    trust: float = 0.08
    """How far ``finish_signal`` must be from 0 before a rule leans on it: a pool's measurement moves by
    ±0.05 between draws of 60 problems where finishing first says nothing (docs/benchmarks.md)."""
    tie_break: TieBreak | None = None
    """Which of tied answers wins; None: from ``finish_signal`` — the earliest finisher's where finishing first
    has been measured to say "right" (a 1–1–1 split among the first finishers goes to the first), else the
    latest finisher's: a 2–2 split between a quick guess and a long derivation goes to the derivation
    (+0.7…+1.3 problems on the real-shaped gpt-oss pools), and where the measurement is near 0 it costs
    little (−0.1 on the flat pool) while "earliest" would lose 0.5 on an inverted model measured as flat.
    The larger answer when nothing was measured (docs/benchmarks.md, issue 20)."""
    pressed: bool = True
    """While time binds (the problems so far would spend more than their fair share without a cap:
    :func:`equalized_allowance` is not None), stop also when the first 3 finishers agree or an answer has
    half the samples' votes (:func:`pressed_rules`): an earlier stop is worth more when the time it saves is
    another problem's (+0.8 on syn-long / 14B, +0.3 on syn-aimo3-long, +1.0 on syn-aimo3-real-long; where
    time does not bind it never fires)."""
    name: str = "ours"

    def binds(self, state: BankState, now: float) -> bool:
        """Whether the run's problems so far would spend more than their fair share of the time left."""
        if len(state.history) < self.warmup:
            return False
        return equalized_allowance(state.history, state.left(now) / state.problems_left) is not None

    def uses_quorum(self) -> bool:
        """The first-finish quorum votes among the first finishers only when finishing first has been measured
        to say "right": on a model whose short attempts are wrong more often it votes among the worst ones."""
        return self.quorum is not None and self.finish_signal is not None and self.finish_signal >= self.trust

    def tie(self) -> TieBreak:
        if self.tie_break is not None:
            return self.tie_break
        if self.finish_signal is None:
            return "larger"
        return "earliest" if self.finish_signal >= self.trust else "latest"

    def _quorum(self, n: int) -> int | None:
        if not self.uses_quorum():
            return None
        return min(max(self.quorum_min, round(self.quorum * n)), n)  # type: ignore[operator]

    def _expected_seconds(self, state: BankState, n: int, max_tokens: int) -> float:
        """Time until a problem on this rung stops, typically: its samples decode together until the
        quorum's share has finished (all of them without a quorum)."""
        stop = min(self._quorum(n) or n, n)
        at = state.lengths.quantile(stop / n) if stop < n else None
        length = min(at if at is not None else max_tokens * stop / n, max_tokens)
        speed = state.throughput.model
        return speed.prefill_seconds(self.prompt_tokens) + speed.chunk_seconds(n, n * self.prompt_tokens, int(length))

    def allowance(self, state: BankState, now: float) -> float:
        left = state.left(now)
        n_left = state.problems_left
        share = left / n_left
        cap = equalized_allowance(state.history, share) if len(state.history) >= self.warmup else None
        allowance = self.stretch * share if cap is None else cap
        return max(min(allowance, left - self.reserve * share * (n_left - 1)), 0.0)

    def budget(self, state: BankState, now: float, problem: Any) -> Budget:
        allowance = self.allowance(state, now)
        if self.difficulty is not None and problem is not None:
            factor = min(max(float(self.difficulty(problem)), 0.25), 4.0)
            allowance = min(allowance * factor, state.left(now))
        n = self.ladder[0]
        for rung in self.ladder:
            if self._expected_seconds(state, rung, state.max_tokens) <= allowance:
                n = rung
        n = min(n, state.max_samples)
        quorum = self._quorum(n)
        agreements = self.agreements
        if self.pressed and self.binds(state, now):
            agreements = agreements + pressed_rules(n)
        rules = StopRules(agreements=agreements, certain=True, hopeless_after=self.hopeless_after,
                          quorum=quorum, tie_break=self.tie())
        return Budget(now + allowance, n, state.max_tokens, rules)

    def report(self, outcome: Outcome) -> None:
        pass


@dataclass
class AIMO3Baseline:
    """The AIMO3 public notebooks' schedule (docs/design.md "AIMO3"): each problem gets
    ``clamp(time_left − (problems_left − 1)·base, base, high)`` seconds — whatever exceeds ``base`` for
    every later problem, between ``base`` (300 s) and ``high`` (900 s) — with 8 attempts, a stop when one
    answer has ``k`` (4) votes, and the entropy-weighted vote. The 5th place tuned exactly these four
    numbers (stable region base 288–306 s, high 894–906 s, 8 attempts, k=4)."""

    base: float = 300.0
    high: float = 900.0
    n_samples: int = 8
    k: int = 4
    name: str = "aimo3_baseline"

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.high:
            raise ValueError(f"aimo3_baseline needs 0 < base <= high, got base {self.base}, high {self.high}")

    def budget(self, state: BankState, now: float, problem: Any) -> Budget:
        seconds = min(max(state.left(now) - (state.problems_left - 1) * self.base, self.base), self.high)
        rules = StopRules(agreements=(Agreement(self.k, self.k, "any"),), certain=False,
                          weighting=Weighting(confidence="mean"))
        return Budget(now + seconds, self.n_samples, state.max_tokens, rules)

    def report(self, outcome: Outcome) -> None:
        pass


POLICIES: dict[str, Callable[[], Policy]] = {
    "ours": Ours,
    "aimo3_baseline": AIMO3Baseline,
    "second_place": SecondPlace,
    "linspace": Linspace,
    "equal": EqualSplit,
}


def make_policy(policy: str, params: Mapping[str, Any] | None = None, *, where: str = "policy_params",
                **overrides: Any) -> Policy:
    """The named policy with ``params`` (a config's ``policy_params``: checked field by field, an error names
    ``where`` and the field) and ``overrides`` (objects, e.g. a difficulty hook, or another ``name``) applied."""
    name = policy
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown schedule policy {name!r}; choose one of {sorted(POLICIES)}") from None
    if params:
        known = {f.name for f in fields(factory)}  # type: ignore[arg-type]
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown} of policy {name!r}; known: {sorted(known)}")
        overrides = {**vars(from_dict(factory, dict(params), where)), **overrides}  # type: ignore[arg-type]
    return factory(**overrides)  # type: ignore[call-arg]
