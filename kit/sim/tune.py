"""Tune a time policy's parameters by simulation, and report them on pools they were not tuned on.

``kit simulate --tune`` searches a grid of a policy's parameters (:data:`GRIDS`) over a family of pools
(:func:`kit.sim.pools.family`) and hardware models, every grid point on the same simulated competitions
(common random numbers). Two figures per pool, so that nothing is fitted to the pool it is judged on:

* **in-sample** — the parameters best on *all* pools (what a user gets), scored on this pool;
* **held-out** — leave-one-pool-out: the parameters best on every *other* pool, scored on this one. The gap
  between the two is the overfitting a new pool (a new model, a new competition) would see.

The objective is the mean expected score over the (pool, hardware) cells, so a pool with many problems or a
fast machine counts as much as any other. The AIMO3 private set runs twice; the penalized score has the
single run's expectation (each problem scores the mean of two independent runs), so tuning uses the
expected score and reports the penalized one.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kit.offline.finish_order import calibrated_signal, finish_signal_estimate
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.schedule import Policy, make_policy
from kit.runtime.throughput import SpeedModel, get_speed
from kit.sim.pools import SimProblem
from kit.sim.simulate import hardware_max_seqs, monte_carlo

GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "ours": {"quorum": (0.25, 0.35, 0.5), "quorum_min": (3, 4, 5), "stretch": (1.5, 2.0, 3.0)},
    "aimo3_baseline": {"base": (150.0, 225.0, 300.0, 375.0, 450.0), "high": (600.0, 750.0, 900.0, 1050.0, 1200.0),
                       "n_samples": (4, 8, 16), "k": (3, 4, 5)},
}
"""Parameters searched per policy; every other parameter keeps its default."""


@dataclass
class TuneResult:
    policy: str
    grid: dict[str, tuple[Any, ...]]
    cells: list[tuple[str, str]]
    """(pool, hardware) pairs, in order."""
    scores: dict[tuple[tuple[str, Any], ...], list[float]]
    """Grid point (sorted items) → expected score per cell."""
    default: tuple[tuple[str, Any], ...]
    chosen: tuple[tuple[str, Any], ...] = ()
    """Best on all pools."""
    held_out: dict[str, tuple[tuple[str, Any], ...]] = field(default_factory=dict)
    """Pool → the point best on every other pool."""

    def score(self, point: tuple[tuple[str, Any], ...], pool: str) -> float:
        """Mean expected score of ``point`` over ``pool``'s cells."""
        return statistics.fmean(s for s, (p, _) in zip(self.scores[point], self.cells, strict=True) if p == pool)

    def rows(self) -> list[dict[str, Any]]:
        """Per pool: default, in-sample (chosen on all pools) and held-out (chosen on the others) scores."""
        pools = list(dict.fromkeys(p for p, _ in self.cells))
        return [{"pool": pool, "default": self.score(self.default, pool), "in_sample": self.score(self.chosen, pool),
                 "held_out": self.score(self.held_out[pool], pool), "held_out_params": dict(self.held_out[pool])}
                for pool in pools]


def points(grid: Mapping[str, Sequence[Any]], defaults: Mapping[str, Any]) -> list[tuple[tuple[str, Any], ...]]:
    """Every grid point as sorted ``(name, value)`` items; the policy's defaults are always one of them."""
    names = sorted(grid)
    out = [tuple(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    default = tuple((n, defaults[n]) for n in names)
    return out if default in out else [*out, default]


def _best(result: TuneResult, cells: Sequence[int]) -> tuple[tuple[str, Any], ...]:
    return max(result.scores, key=lambda pt: (statistics.fmean(result.scores[pt][i] for i in cells), pt == result.default))


def tune(policy: str, pools: Mapping[str, Sequence[SimProblem]], hardware: Sequence[str | SpeedModel], *,
         runs: int = 40, profile: Profile | str | None = None, seed: int = 0,
         grid: Mapping[str, Sequence[Any]] | None = None,
         progress: Callable[[str], None] | None = None,
         base: Mapping[str, Mapping[str, Any]] | None = None) -> TuneResult:
    """Score every grid point of ``policy`` on every (pool, hardware) cell and choose in-sample and
    leave-one-pool-out (see the module docstring). Needs at least two pools for a held-out figure. ``base``
    gives a pool's fixed parameters under the grid's (``ours``: the pool's own ``finish_signal``, so that
    the grid tunes the rest of a calibrated policy)."""
    base = base or {}
    if len(pools) < 2:
        raise ValueError("tuning needs at least two pools (one is held out at a time)")
    if policy not in GRIDS and grid is None:
        raise ValueError(f"no tuning grid for policy {policy!r}; known: {sorted(GRIDS)}")
    grid = dict(grid or GRIDS[policy])
    prof = get_profile(profile)
    probe = make_policy(policy)
    unknown = sorted(set(grid) - set(vars(probe)))
    if unknown:
        raise ValueError(f"policy {policy!r} has no parameter(s) {unknown}")
    defaults = {n: getattr(probe, n) for n in grid}
    cells = [(name, str(hw if isinstance(hw, str) else "custom")) for name in pools for hw in hardware]
    speeds = [get_speed(hw) for hw in hardware]
    max_seqs = [hardware_max_seqs(hw) if isinstance(hw, str) else None for hw in hardware]
    result = TuneResult(policy, {k: tuple(v) for k, v in grid.items()}, cells, {},
                        default=tuple((n, defaults[n]) for n in sorted(grid)))
    todo = points(grid, defaults)
    every_tenth = max(1, len(todo) // 10)
    for k, point in enumerate(todo):
        def factory(name: str, point: tuple[tuple[str, Any], ...] = point) -> Callable[[], Policy]:
            return lambda: make_policy(policy, base.get(name), **dict(point))

        result.scores[point] = [monte_carlo(pools[name], factory(name), runs=runs, profile=prof, speed=speed,
                                            seed=seed, second_run=False, max_num_seqs=seqs).expected_score
                                for name in pools for speed, seqs in zip(speeds, max_seqs, strict=True)]
        if progress is not None and ((k + 1) % every_tenth == 0 or k + 1 == len(todo)):
            progress(f"tune: {k + 1}/{len(todo)} grid points scored")
    every = range(len(cells))
    result.chosen = _best(result, every)
    for name in pools:
        result.held_out[name] = _best(result, [i for i, (p, _) in enumerate(cells) if p != name])
    return result


# --- calibrating ours on one pool (a team's own attempts) --------------------------------------------------

CALIBRATION_BASELINES = ("aimo3_baseline", "second_place", "equal", "linspace")


@dataclass
class Calibration:
    """What ``kit simulate --tune --pool LOG`` found: the calibration written to the config, and how it does
    on problems it was not measured on (two folds of the pool's problems, each calibrated on the other)."""

    pool: str
    finish_signal: float | None
    """The calibration written: the measurement on the whole pool where it clearly differs from the prior,
    else the prior; None when neither exists."""
    folds: list[dict[str, Any]]
    """Per fold: the signal measured on the other fold and the fold's scores of ours calibrated so, ours
    uncalibrated and the best baseline."""
    measured: tuple[float, float, int] | None = None
    """(mean, standard error, problems) of the measurement on the whole pool."""
    prior: float | None = None

    def params(self) -> dict[str, Any]:
        return {} if self.finish_signal is None else {"finish_signal": round(self.finish_signal, 3)}

    def config(self) -> dict[str, Any]:
        """A run configuration (``kit dryrun --config``, a build config's ``submission:`` section)."""
        return {"policy": "ours", "policy_params": self.params()}


def calibrate(pool: Sequence[SimProblem], *, name: str, profile: Profile | str | None, hardware: str | SpeedModel,
              prior: float | None = None, runs: int = 100, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure what finishing first says on ``pool`` and weigh it against the model family's ``prior``
    (:func:`kit.offline.finish_order.calibrated_signal`), and check the calibration out of sample: the
    problems split in two folds, ``ours`` calibrated on one is played on the other against the baselines and
    against ``ours`` uncalibrated (``runs`` competitions each)."""
    prof = get_profile(profile)
    speed = get_speed(hardware)
    seqs = hardware_max_seqs(hardware) if isinstance(hardware, str) else None

    def signal(problems: Sequence[SimProblem]) -> float | None:
        return calibrated_signal([(p.gold, p.samples) for p in problems], prior)

    folds = [list(pool[0::2]), list(pool[1::2])]
    rows = []
    for k, (held, other) in enumerate(((folds[0], folds[1]), (folds[1], folds[0]))):
        measured = signal(other)
        calibrated = {} if measured is None else {"finish_signal": measured}
        score = {}
        for label, factory in (
                ("calibrated", lambda c=calibrated: make_policy("ours", c)),
                ("uncalibrated", lambda: make_policy("ours")),
                *((b, lambda b=b: make_policy(b)) for b in CALIBRATION_BASELINES)):
            score[label] = monte_carlo(held, factory, runs=runs, profile=prof, speed=speed, seed=seed + k,
                                       second_run=False, max_num_seqs=seqs).expected_score
        best = max(CALIBRATION_BASELINES, key=score.__getitem__)
        rows.append({"fold": k, "problems": len(held), "signal_from_other_fold": measured,
                     "ours_calibrated": score["calibrated"], "ours_uncalibrated": score["uncalibrated"],
                     "best_baseline": best, "best_baseline_score": score[best]})
        if progress is not None:
            progress(f"calibrate: fold {k + 1}/2 scored")
    return Calibration(name, signal(pool), rows, finish_signal_estimate([(p.gold, p.samples) for p in pool]), prior)
