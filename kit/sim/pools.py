"""Pools of recorded or synthetic problems for the competition simulator, and the family they are judged on.

A :class:`SimProblem` is what the simulator needs of a problem: its gold answer and, per sample, the
normalised answer and the tokens it took. Pools come from recorded traces (:func:`pool_from_traces`), our own
run records (:func:`pool_from_records`) or synthetic specs (:class:`SyntheticSpec`); :data:`FAMILY` names the
pools a time policy is tuned and validated on (leave-one-pool-out, :mod:`kit.sim.tune`), so that no rule is
fitted to one pool (docs/design.md "Time bank").
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kit.offline.runs import load_pool_run, load_records_run, records_file
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.tokens import ApproxTokenizer


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


def pool_from_traces(pool: str | Path, profile: Profile | str | None = None, *,
                     columns: Mapping[str, str] | None = None) -> list[SimProblem]:
    """Problems of a recorded trace pool or an attempt log (a Harmony token log, an attempt table with
    ``columns`` renamed), read by :func:`kit.offline.runs.load_pool_run`: answers normalised for the profile;
    token counts approximate, as the replay engine counts, except in attempt logs, which carry their own."""
    tok = ApproxTokenizer()
    return [SimProblem(p.problem_id, p.gold, tuple((s.answer, max(s.tokens, 1)) for s in p.samples),
                       tok.count(p.problem) + 60, text=p.problem)
            for p in load_pool_run(pool, profile=profile, columns=columns).problems]


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
    answer_range: int = 1000
    """Answers are drawn from 0..answer_range-1 (100,000 for AIMO3)."""
    seed: int = 0
    wrong_sigma: float | None = None
    """Spread of the wrong samples' lengths (None: ``length_sigma``). Wider than the right ones' puts wrong
    samples among the shortest even when their median is no shorter: real gpt-oss-120b output."""
    quick_wrong_share: float = 0.0
    """Share of the wrong samples that are quick guesses, ``quick_factor`` × the correct median long: what
    makes the first finisher of a real gpt-oss-120b attempt set wrong more often than a random attempt."""
    quick_factor: float = 0.3


def pool_synthetic(spec: SyntheticSpec = SyntheticSpec()) -> list[SimProblem]:
    rng = random.Random(spec.seed)
    out = []
    for k in range(spec.problems):
        p = rng.betavariate(*spec.accuracy_beta)
        n = spec.answer_range
        gold = rng.randrange(n)
        distractor = (gold + rng.randrange(1, n)) % n
        rows = []
        for _ in range(spec.samples):
            if rng.random() < p:
                tokens = int(rng.lognormvariate(math.log(spec.correct_median), spec.length_sigma))
                answer: int | None = gold
            else:
                quick = spec.quick_wrong_share > 0 and rng.random() < spec.quick_wrong_share
                median = spec.correct_median * spec.quick_factor if quick else spec.wrong_median
                tokens = int(rng.lognormvariate(math.log(median), spec.wrong_sigma or spec.length_sigma))
                u = rng.random()
                answer = None if u < spec.no_answer_share else (
                    distractor if u < spec.no_answer_share + spec.distractor_share else rng.randrange(n))
            if tokens >= spec.max_tokens:
                tokens, answer = spec.max_tokens, None
            rows.append((answer, max(tokens, 1)))
        out.append(SimProblem(f"syn{k}", gold, tuple(rows)))
    return out


def load_pool_arg(pool: str, profile: Profile | str | None = None, seed: int = 0, *,
                  columns: Mapping[str, str] | None = None) -> list[SimProblem]:
    """``synthetic``, a pool of :func:`family` (e.g. ``syn-r1-8``, ``syn-aimo3``), a bundled trace pool name, a
    trace file/folder, a run-records jsonl, or an attempt log (Harmony token log, attempt table; ``columns``
    renames its fields)."""
    if pool == "synthetic":
        return pool_synthetic(SyntheticSpec(seed=seed))
    synthetic = {n: load for n, load in {**family("aimo2"), **family("aimo3")}.items() if n.startswith("syn-")}
    if pool in synthetic:  # recorded pools fall through: read with this profile's answer normalisation
        return synthetic[pool]()
    path = records_file(pool)
    if path is not None:
        return pool_from_records(path, profile)
    return pool_from_traces(pool, profile, columns=columns)


def draw_problems(pool: Sequence[SimProblem], rng: random.Random, n_problems: int) -> list[SimProblem]:
    """A competition's problems, in run order: the first draws of ``rng`` (so every policy and the bound of
    :mod:`kit.sim.bounds` meet the same problems for the same seed)."""
    problems = [rng.choice(pool) for _ in range(n_problems)]
    rng.shuffle(problems)
    return problems


SYNTHETIC_SHAPES: dict[str, SyntheticSpec] = {
    "syn-r1-32": SyntheticSpec(),
    "syn-r1-8": SyntheticSpec(samples=8, seed=1),
    "syn-r1-64": SyntheticSpec(samples=64, seed=2),
    "syn-easy": SyntheticSpec(accuracy_beta=(2.0, 0.8), seed=3),
    "syn-hard": SyntheticSpec(accuracy_beta=(0.3, 1.5), seed=4),
    "syn-long": SyntheticSpec(correct_median=9000.0, wrong_median=17_000.0, seed=5),
    "syn-short": SyntheticSpec(correct_median=1500.0, wrong_median=3200.0, seed=6),
    "syn-short-8": SyntheticSpec(samples=8, correct_median=1500.0, wrong_median=3200.0, seed=7),
    "syn-hard-8": SyntheticSpec(samples=8, accuracy_beta=(0.3, 1.5), seed=8),
}
"""Synthetic shapes around the calibrated R1-distill pool: easy- and hard-heavy accuracy, 8 to 64 samples,
long and short traces (each its own seed: independent problems)."""

AIMO3_SPEC = SyntheticSpec(problems=60, samples=32, accuracy_beta=(1.6, 0.7), correct_median=22_000.0,
                           wrong_median=38_000.0, length_sigma=0.45, max_tokens=65_536, distractor_share=0.3,
                           no_answer_share=0.1, answer_range=100_000, seed=11)
"""An AIMO3-like pool for gpt-oss-120b: 32 recorded attempts per problem (8 of them race in a run, so the
second run of the private set draws others), answers 0–99999, pass@1 ≈ 0.7 spread over problems (the
top AIMO3 scores were 44/50 with majority voting), reasoning of 20–40k tokens (65k context: the winners
raised it from 32k because attempts were cut), correct attempts shorter than wrong ones."""


AIMO3_REAL_SPEC = replace(AIMO3_SPEC, samples=16, correct_median=29_000.0, wrong_median=42_000.0, length_sigma=0.45,
                          wrong_sigma=0.6, quick_wrong_share=0.3, quick_factor=0.3, distractor_share=0.6,
                          accuracy_beta=(1.4, 0.7), seed=21)
"""An AIMO3 pool shaped like real gpt-oss-120b attempts
(docs/design.md "What real gpt-oss-120b output looks like"): ~29k median tokens, p90 ~60k (65k cap), wrong attempts about as long as right ones (median ratio
1.07–1.15 over its draws, measured 1.08) yet the shortest attempts wrong more often (the first finisher of 8
right 0.44–0.60 vs a random attempt 0.60–0.70; measured 0.42 vs 0.66) — wrong answers are quick guesses or
long struggles — and wrong answers concentrated on a distractor (majority of 8 0.73–0.86; measured 0.76).
16 attempts per problem (8 race in a run). Built from those published figures, not fitted to any pool."""


def family(profile: Profile | str | None = None, redraw: int = 0,
           separation: float | None = None) -> dict[str, Callable[[], list[SimProblem]]]:
    """The pools a time policy is judged on: every bundled recorded pool and the synthetic shapes (AIMO2
    profiles), or (``aimo3``) the AIMO3-like pools whose short attempts are right more often and the
    real-shaped ones (:data:`AIMO3_REAL_SPEC`: as real gpt-oss-120b attempts, short ones wrong more often;
    ``-flat``: finishing first says nothing; ``-hard``: lower accuracy; ``-long``: ~35k-token attempts, where
    the 5 hours bind). Loaders, so a caller pays only for the pools it uses.

    ``redraw`` k > 0 draws other problems of each synthetic shape (seed + 1000·k). Why: a shape's 60 problems
    are one draw, and a policy can win on them by luck of those problems (which answer a tie-break favours,
    which problems sit near 50 %) that sample-level Monte Carlo never varies; averaging over redraws puts the
    problems' variation into the confidence interval. Recorded pools are what they are and do not change.

    ``separation`` r sets every synthetic shape's wrong-sample median length to r × its correct one (the
    shapes use 1.5–2.1): a stress test of how much a policy leans on "short samples are right more often",
    whose strength varies between models and which a first-finish quorum trusts."""
    prof = get_profile(profile)

    def synthetic(spec: SyntheticSpec) -> Callable[[], list[SimProblem]]:
        spec = replace(spec, seed=spec.seed + 1000 * redraw)
        if separation is not None:
            spec = replace(spec, wrong_median=spec.correct_median * separation)
        return lambda: pool_synthetic(spec)

    if prof.name == "aimo3":
        return {"syn-aimo3": synthetic(AIMO3_SPEC),
                "syn-aimo3-hard": synthetic(replace(AIMO3_SPEC, accuracy_beta=(0.8, 0.9), seed=12)),
                "syn-aimo3-long": synthetic(replace(AIMO3_SPEC, correct_median=32_000.0, wrong_median=48_000.0,
                                                    seed=13)),
                "syn-aimo3-real": synthetic(AIMO3_REAL_SPEC),
                "syn-aimo3-real-flat": synthetic(replace(AIMO3_REAL_SPEC, wrong_median=29_000.0, wrong_sigma=None,
                                                         quick_wrong_share=0.0, seed=22)),
                "syn-aimo3-real-hard": synthetic(replace(AIMO3_REAL_SPEC, accuracy_beta=(0.9, 0.8), seed=23)),
                "syn-aimo3-real-long": synthetic(replace(AIMO3_REAL_SPEC, correct_median=36_000.0, wrong_median=42_000.0,
                                                         seed=24))}
    pools: dict[str, Callable[[], list[SimProblem]]] = {
        name: (lambda n=name: pool_from_traces(n, prof)) for name in ("skythought_aime24", "nemoskills", "tora_gsm8k")}
    pools |= {name: synthetic(spec) for name, spec in SYNTHETIC_SHAPES.items()}
    return pools
