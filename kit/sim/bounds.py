"""Upper bounds of a time policy's score: what perfect knowledge of the samples could score in the same run.

* :func:`oracle_score` — the **timed bound**. It knows every recorded sample of every problem of the run and
  spends the run's time optimally: a problem is won at the least cost any policy could win it — nothing if
  the fallback answer is right, else the time to decode its shortest correct sample *alone* (a sample
  decoding in a batch is never faster: the step time grows with the batch) — and with every problem worth
  one point, taking the cheapest problems first until the run's time is spent is optimal (a unit-value
  knapsack; an exchange argument). Any policy's correct set costs at least the sum of those least costs, so
  no policy beats the bound in any run: ``tests/test_schedule.py`` checks it run by run.
* :func:`untimed_majority` — the **untimed bound** of voting: the plain majority of every recorded sample
  of each problem (no time limit, no early stop). Not a strict bound (a lucky subset can beat the
  majority of all), it says what voting alone gives.

The bound uses the machine's own speed (no slowdown): with throughput dropping mid-run it stays an upper
bound.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from kit.runtime.profiles import Profile
from kit.runtime.throughput import SpeedModel
from kit.runtime.voting import Vote, majority
from kit.sim.pools import SimProblem, draw_problems


def least_cost(problem: SimProblem, *, profile: Profile, speed: SpeedModel) -> float:
    """Seconds at least to answer ``problem`` right (0 when the fallback answer is its gold; inf when no
    recorded sample is right). Ignoring the solver's token cap keeps it a bound for any cap."""
    if problem.gold is not None and problem.gold == profile.fallback_answer:
        return 0.0
    lengths = [t for a, t in problem.samples if a is not None and a == problem.gold]
    if not lengths:
        return float("inf")
    tokens = min(lengths)
    return speed.prefill_seconds(problem.prompt_tokens) + speed.chunk_seconds(1, problem.prompt_tokens, tokens)


@dataclass(frozen=True)
class Bound:
    score: int
    seconds: float
    """Generation seconds the bound spends (the problems it wins)."""


def oracle_score(problems: Sequence[SimProblem], *, profile: Profile, speed: SpeedModel, available_seconds: float,
                 per_call_seconds: float | None = None) -> Bound:
    """The timed bound of one run (see the module docstring): the most problems whose least costs fit in
    ``available_seconds``, none above ``per_call_seconds``."""
    costs = sorted(c for p in problems if (c := least_cost(p, profile=profile, speed=speed)) != float("inf")
                   and (per_call_seconds is None or c <= per_call_seconds))
    spent, won = 0.0, 0
    for c in costs:
        if spent + c > available_seconds:
            break
        spent += c
        won += 1
    return Bound(won, spent)


def oracle_competition(pool: Sequence[SimProblem], *, profile: Profile, speed: SpeedModel, rng: random.Random,
                       n_problems: int = 50, startup_seconds: float = 600.0, overhead_seconds: float = 2.0) -> Bound:
    """The timed bound of the run :func:`kit.sim.simulate.run_competition` plays with the same ``rng`` state:
    the same problems, the whole limit after start-up and the per-problem overhead every policy pays."""
    problems = draw_problems(pool, rng, n_problems)
    available = profile.total_seconds - startup_seconds - overhead_seconds * n_problems
    return oracle_score(problems, profile=profile, speed=speed, available_seconds=max(available, 0.0),
                        per_call_seconds=profile.per_call_seconds)


def untimed_majority(pool: Sequence[SimProblem]) -> float:
    """Share of the pool's problems whose plain majority over all recorded samples is the gold."""
    if not pool:
        return 0.0
    right = sum(p.gold is not None and majority([Vote(a, order=i) for i, (a, _) in enumerate(p.samples)]) == p.gold
                for p in pool)
    return right / len(pool)
