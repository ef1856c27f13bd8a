"""What finishing first says about being right, measured on a model's own attempts.

Why: a first-finish quorum, a tie-break to the earliest finisher and "stop at the first few agreeing"
all lean on one property of a model — its short attempts are right more often. On R1-distill pools that
holds (wrong samples are about twice as long as right ones); on real gpt-oss-120b attempts it is inverted
(the shortest attempts are wrong more often: first-finish 0.42 vs a random attempt 0.66, correct/wrong
length ratio ~1.08; docs/design.md "AIMO3"). So it is measured, per run, before any rule trusts it:

* ``first_finish`` — accuracy of the first attempt to finish (by finish time when the run recorded one,
  else by length: attempts that start together finish in order of their tokens);
* ``random`` — accuracy of a random attempt (the mean per-problem pass@1: the exact expectation, no draw);
* ``difference`` — first_finish − random, with a paired bootstrap CI over problems: above 0, finishing
  first says "right"; below, "wrong"; a CI across 0 says nothing at this sample size;
* ``length_ratio`` — median tokens of the wrong attempts over the median of the right ones (with its
  bootstrap CI): above 1, right attempts are shorter.

:func:`finish_signal` is the number a policy can be calibrated on (``kit simulate --tune``);
:func:`calibrated_signal` weighs a small measurement against the model family's prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kit.offline.runs import EvalProblem, Run


@dataclass(frozen=True)
class FinishOrder:
    """First-finish vs a random attempt on one run (see the module docstring)."""

    run: str
    problems: int
    first_finish: float
    random: float
    difference: float
    diff_low: float
    diff_high: float
    length_ratio: float | None
    ratio_low: float | None
    ratio_high: float | None

    @property
    def verdict(self) -> str:
        if self.diff_low > 0:
            return "short attempts are right more often"
        if self.diff_high < 0:
            return "short attempts are wrong more often"
        return "finishing first says nothing measurable"

    def row(self) -> dict:
        return {**self.__dict__, "verdict": self.verdict}


def _per_problem(problems: Sequence[EvalProblem]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    first, rand, right, wrong = [], [], [], []
    for p in problems:
        done = p.done
        order = p.finish_order()
        first.append(float(order[0].answer == p.gold))
        rand.append(sum(s.answer == p.gold for s in done) / len(done))
        right.append(np.array([s.tokens for s in done if s.answer == p.gold], dtype=float))
        wrong.append(np.array([s.tokens for s in done if s.answer != p.gold], dtype=float))
    return np.array(first), np.array(rand), right, wrong


def _ratio(right: Sequence[np.ndarray], wrong: Sequence[np.ndarray]) -> float | None:
    r, w = np.concatenate(right) if right else np.array([]), np.concatenate(wrong) if wrong else np.array([])
    if len(r) == 0 or len(w) == 0:
        return None
    return float(np.median(w) / np.median(r))


def finish_order(run: Run, *, n_boot: int = 1000, seed: int = 0, min_attempts: int = 2) -> FinishOrder | None:
    """First-finish vs random on the run's scored problems with at least ``min_attempts`` finished attempts
    (None when there are none)."""
    problems = [p for p in run.scored if len(p.done) >= min_attempts]
    if not problems:
        return None
    first, rand, right, wrong = _per_problem(problems)
    n = len(problems)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    diffs = (first[draws] - rand[draws]).mean(axis=1)
    ratios = [r for d in draws if (r := _ratio([right[i] for i in d], [wrong[i] for i in d])) is not None]
    ratio = _ratio(right, wrong)
    return FinishOrder(run.name, n, float(first.mean()), float(rand.mean()), float(first.mean() - rand.mean()),
                       float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5)), ratio,
                       float(np.percentile(ratios, 2.5)) if ratios else None,
                       float(np.percentile(ratios, 97.5)) if ratios else None)


def finish_signal_estimate(problems: Sequence[tuple[int | None, Sequence[tuple[int | None, int]]]]
                           ) -> tuple[float, float, int] | None:
    """(mean, standard error, problems) of first-finish minus random accuracy over (gold, [(answer, tokens),
    ...]) problems, the first finisher being the shortest attempt (ties: the first listed). None without a
    scored problem of two attempts or more."""
    diffs = []
    for gold, samples in problems:
        if gold is None or len(samples) < 2:
            continue
        shortest = min(range(len(samples)), key=lambda i: (samples[i][1], i))
        diffs.append(float(samples[shortest][0] == gold) - sum(a == gold for a, _ in samples) / len(samples))
    if not diffs:
        return None
    se = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("inf")
    return float(np.mean(diffs)), se, len(diffs)


def finish_signal(problems: Sequence[tuple[int | None, Sequence[tuple[int | None, int]]]]) -> float | None:
    """First-finish minus random accuracy (:func:`finish_signal_estimate`'s mean): the one number that says
    how far a policy may lean on finishing first."""
    est = finish_signal_estimate(problems)
    return None if est is None else est[0]


MIN_PROBLEMS = 30
"""Scored problems (two attempts or more) a measurement needs before it may replace a prior."""


def calibrated_signal(problems: Sequence[tuple[int | None, Sequence[tuple[int | None, int]]]],
                      prior: float | None, *, z: float = 2.0, min_problems: int = MIN_PROBLEMS) -> float | None:
    """The finish signal a policy should use: the measurement on ``problems`` where it rests on at least
    ``min_problems`` problems and is clearly different from ``prior`` (the model family's, e.g. the stack's
    calibration) — more than ``z`` standard errors away — else the prior (the measurement when there is no
    prior). Why: 15 problems of an R1-distill model measure anywhere from +0.02 to +0.18 (SkyThought's
    halves), and such a draw must not switch off a rule that the family's hundreds of problems support; a
    log of a model that behaves otherwise (gpt-oss: −0.2 against R1's +0.1) is far outside that noise."""
    est = finish_signal_estimate(problems)
    if est is None:
        return prior
    mean, se, n = est
    if prior is None or (n >= min_problems and abs(mean - prior) > z * se):
        return mean
    return prior
