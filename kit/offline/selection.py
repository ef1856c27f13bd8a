"""Answer selection: which of a problem's sample answers to submit, evaluated offline on recorded samples.

A *strategy* maps (problem text, candidates) to one answer. Every strategy here is a pure function of
the recorded candidates, so the strategy × accuracy table (:func:`strategy_table`) is computed from run
records or trace pools without re-generating anything.

Strategies (``STRATEGIES``; factories for other parameters):

* ``first`` / ``random`` — baselines: the answer of sample 0, or of one sample drawn with a seed derived
  from the problem text (expected accuracy = pass@1).
* ``majority`` — plain vote, :func:`kit.runtime.voting.majority` (ties → the larger answer, the solver's default).
* ``weighted`` — vote where code-verified and shorter samples weigh more (:class:`SampleWeights`).
* ``first_finish`` — First-Finish Search (Agarwal et al. 2025, "First Finish Search: Efficient Test-Time
  Scaling in Large Language Models", arXiv:2505.18149): the answer of the first sample to finish;
  ``first_finish_q3`` / ``_q5`` vote among the first samples to finish until 3 / 5 of them have answers.
* ``entropy`` / ``entropy_tail`` — the AIMO3 winners' confidence vote: each sample weighs
  ``1/max(H, 1e-9)`` with H its mean token entropy over all / its last tokens (docs/design.md "AIMO3").
* ``composite`` — the AIMO3 2nd place: answers ranked by ``2.0·share + 0.3/median_H + 0.5·consensus``
  (:func:`kit.runtime.voting.composite_scores`). Without recorded entropies (trace pools, engines without
  log-probabilities) all three are the plain majority.
* ``scored`` (:func:`scored_strategy`) — reranking by a scorer model's ``Candidate.score``; the trained
  outcome reward model of :mod:`kit.learn.scorer` fills the scores (:func:`kit.learn.scorer.scorer_strategy`).

Abstentions (``answer=None``) never win a vote; a strategy returns None only when no candidate answered
(``first``/``random`` return the chosen sample's answer, None included: that is what they measure).
"""

from __future__ import annotations

import math
import random
import statistics
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import polars as pl

from kit.offline.runs import Run, load_pool_run, load_records_run
from kit.runtime.protocols.tir import output_blocks, output_shows_error
from kit.runtime.voting import PLAIN, TieBreak, Vote, VoteKind, Weighting, majority, vote_kind

if TYPE_CHECKING:
    from kit.runtime.profiles import Profile


@dataclass(frozen=True)
class Candidate:
    """One sample of one problem, as selection sees it."""

    answer: int | None
    """Normalised answer (None: no answer)."""
    tokens: int
    """Generated tokens."""
    finish_rank: int
    """0 = finished first (records: by finish time; trace pools: by token count, shortest first)."""
    code_ok: bool | None = None
    """TIR: all code calls ran without error (None: no code)."""
    text: str = ""
    score: float | None = None
    """Scorer model's score, filled by a scorer."""
    entropy: float | None = None
    """Mean token entropy of the sample (records with log-probabilities; None otherwise)."""
    entropy_tail: float | None = None
    """Mean token entropy of its last tokens."""


Strategy = Callable[[str, Sequence[Candidate]], "int | None"]
"""(problem text, candidates) -> chosen answer (None: nothing to choose)."""

ProblemCandidates = tuple[str, str, "int | None", Sequence[Candidate]]
"""(problem id, problem text, gold answer or None, candidates) — one row of :func:`strategy_table`."""


class CandidateScorer(Protocol):
    """What evaluation needs of a trained scorer (:class:`kit.learn.scorer.Scorer` is one): its metadata
    (``source`` and ``train_problems``, to judge it only on problems it never saw) and a batched scoring
    pass that fills :attr:`Candidate.score` of every answered candidate."""

    meta: dict

    def fill(self, problems: Sequence[ProblemCandidates]) -> list[ProblemCandidates]: ...


# --- votes ------------------------------------------------------------------------------------------


def _kind(c: Candidate) -> VoteKind:
    """The candidate's :data:`kit.runtime.voting.VOTE_KINDS` entry from its code verdict."""
    return vote_kind(0 if c.code_ok is None else 1, 0 if c.code_ok in (None, True) else 1)


def to_votes(candidates: Sequence[Candidate], weights: Sequence[float] | None = None) -> list[Vote]:
    """Candidates as :class:`kit.runtime.voting.Vote` objects in finishing order (``order`` = ``finish_rank``)."""
    ws = [1.0] * len(candidates) if weights is None else list(weights)
    if len(ws) != len(candidates):
        raise ValueError(f"{len(ws)} weights for {len(candidates)} candidates")
    pairs = sorted(zip(candidates, ws, strict=True), key=lambda cw: cw[0].finish_rank)
    return [Vote(c.answer, weight=w, order=c.finish_rank, tokens=c.tokens, kind=_kind(c), entropy=c.entropy,
                 entropy_tail=c.entropy_tail) for c, w in pairs]


def majority_strategy(tie_break: TieBreak = "larger", weighting: Weighting = PLAIN) -> Strategy:
    """Plain (or :class:`~kit.runtime.voting.Weighting`-weighted) vote over all candidates, via kit.runtime.voting."""

    def choose(problem: str, candidates: Sequence[Candidate]) -> int | None:
        return majority(to_votes(candidates), weighting, tie_break)

    choose.__name__ = f"majority_{tie_break}"
    return choose


@dataclass(frozen=True)
class SampleWeights:
    """Weights of the ``weighted`` strategy: ``w = code factor × length factor`` (× the 2nd place's small-
    answer factor when ``small_answer_weight`` ≠ 1).

    * code: a sample whose code calls all ran is worth ``code_ok`` votes, one whose code failed
      ``code_error``; a sample without code 1 (kind weights of :class:`kit.runtime.voting.Weighting`). Why: an answer
      that came out of executed code is a checked computation; a sample that kept going after a crash
      often reasons from a wrong state.
    * length: ``(median / tokens) ** length_power`` clipped to ``[1/max_length_factor, max_length_factor]``,
      with the median over the problem's answered candidates. Why: on AIME-level problems correct samples
      are about half as long as wrong ones (docs/design.md "Inference recipes (AIMO2)", ``kit.sim.simulate.SyntheticSpec``): long samples are the
      ones where the model was lost. ``length_power=0`` turns this off.
    """

    code_ok: float = 1.5
    code_error: float = 0.5
    length_power: float = 0.5
    max_length_factor: float = 4.0
    small_answer_weight: float = 1.0

    def weighting(self) -> Weighting:
        return Weighting(small_answer_weight=self.small_answer_weight,
                         kind_weights={"code_ok": self.code_ok, "code_error": self.code_error})

    def length_factors(self, candidates: Sequence[Candidate]) -> list[float]:
        answered = [max(c.tokens, 1) for c in candidates if c.answer is not None]
        if not answered or self.length_power == 0:
            return [1.0] * len(candidates)
        median = statistics.median(answered)
        lo, hi = 1.0 / self.max_length_factor, self.max_length_factor
        return [min(max((median / max(c.tokens, 1)) ** self.length_power, lo), hi) for c in candidates]


def weighted_strategy(weights: SampleWeights = SampleWeights(), tie_break: TieBreak = "larger") -> Strategy:
    """Vote weighted by :class:`SampleWeights` (code verdict × relative length)."""
    weighting = weights.weighting()

    def choose(problem: str, candidates: Sequence[Candidate]) -> int | None:
        return majority(to_votes(candidates, weights.length_factors(candidates)), weighting, tie_break)

    choose.__name__ = "weighted"
    return choose


def first_finish_strategy(quorum: int = 1) -> Strategy:
    """First-Finish Search with an answer-count quorum.

    Candidates are taken in finishing order until ``quorum`` of them have answers (samples that finished
    without an answer are passed over: the solver would keep waiting for the next one); the answer is the
    plain majority of those, ties going to the answer that finished first. ``quorum=1`` is FFS proper. With
    fewer answered candidates than the quorum, all of them vote.
    """
    if quorum < 1:
        raise ValueError(f"quorum must be >= 1, got {quorum}")

    def choose(problem: str, candidates: Sequence[Candidate]) -> int | None:
        firsts: list[Vote] = []
        for v in to_votes(candidates):
            if v.answer is not None:
                firsts.append(v)
                if len(firsts) == quorum:
                    break
        return majority(firsts, PLAIN, "earliest")

    choose.__name__ = f"first_finish_q{quorum}"
    return choose


def first(problem: str, candidates: Sequence[Candidate]) -> int | None:
    """Baseline: the answer of the first candidate in sample order (whatever it is, None included)."""
    return candidates[0].answer if candidates else None


def random_strategy(seed: int = 0) -> Strategy:
    """Baseline: one candidate drawn at random — deterministically, from ``seed`` and the problem text
    (``zlib.crc32``, stable across processes, unlike ``hash``)."""

    def choose(problem: str, candidates: Sequence[Candidate]) -> int | None:
        if not candidates:
            return None
        rng = random.Random(seed * 1_000_003 + zlib.crc32(problem.encode("utf-8")))
        return candidates[rng.randrange(len(candidates))].answer

    choose.__name__ = f"random_s{seed}"
    return choose


def scored_strategy(mode: str = "vote", temperature: float = 1.0) -> Strategy:
    """Reranking by ``Candidate.score`` (filled by a scorer; see :func:`kit.learn.scorer.scorer_strategy`).

    * ``"best"`` — the answer of the highest-scored answered candidate (best-of-n; ties → finished first).
    * ``"vote"`` (default) — each answer's votes weighted by ``sigmoid(score / temperature)``: a
      reward model's scores are Bradley–Terry logits (trl's RewardTrainer loss is
      ``-log σ(r_chosen - r_rejected)``), so σ(r) is a per-sample probability-like weight. Why the default:
      best-of-n with a weak scorer throws away the agreement signal that majority voting already has;
      a score-weighted vote keeps it and lets the scorer break near-ties (TriMER reranks the same way).
    """
    if mode not in ("best", "vote"):
        raise ValueError(f"unknown scored mode {mode!r}; use 'best' or 'vote'")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def choose(problem: str, candidates: Sequence[Candidate]) -> int | None:
        answered = [c for c in candidates if c.answer is not None]
        if any(c.score is None for c in answered):
            raise ValueError("scored strategy: candidates without a score (fill them with a scorer first)")
        if not answered:
            return None
        if mode == "best":
            best = max(answered, key=lambda c: (c.score, -c.finish_rank))
            return best.answer
        weights = [0.0 if c.score is None else 1.0 / (1.0 + math.exp(-c.score / temperature)) for c in candidates]
        return majority(to_votes(candidates, weights), PLAIN, "earliest")

    choose.__name__ = f"scored_{mode}"
    return choose


majority_vote = majority_strategy()
weighted = weighted_strategy()
first_finish = first_finish_strategy(1)

STRATEGIES: dict[str, Strategy] = {
    "first": first,
    "random": random_strategy(0),
    "majority": majority_vote,
    "weighted": weighted,
    "first_finish": first_finish,
    "first_finish_q3": first_finish_strategy(3),
    "first_finish_q5": first_finish_strategy(5),
    "entropy": majority_strategy(weighting=Weighting(confidence="mean")),
    "entropy_tail": majority_strategy(weighting=Weighting(confidence="tail")),
    "composite": majority_strategy(weighting=Weighting(confidence="tail", score="composite")),
}
"""The strategies that need no model; the scorer strategy is built by :func:`kit.learn.scorer.scorer_strategy`."""


# --- evaluation -------------------------------------------------------------------------------------


def _graded(problems: Sequence[ProblemCandidates]) -> list[ProblemCandidates]:
    graded = [p for p in problems if p[2] is not None]
    if not graded:
        raise ValueError("strategy table: no problem has a gold answer to grade against")
    return graded


def choices_frame(problems: Sequence[ProblemCandidates], strategies: Mapping[str, Strategy]) -> pl.DataFrame:
    """One row per (problem, strategy): problem_id, strategy, chosen, gold, correct (graded problems only)."""
    rows = []
    for pid, text, gold, cands in _graded(problems):
        for name, strategy in strategies.items():
            chosen = strategy(text, cands)
            rows.append({"problem_id": pid, "strategy": name, "chosen": chosen, "gold": gold,
                         "correct": chosen is not None and chosen == gold})
    return pl.DataFrame(rows, schema={"problem_id": pl.String, "strategy": pl.String, "chosen": pl.Int64,
                                      "gold": pl.Int64, "correct": pl.Boolean})


def strategy_table(problems: Sequence[ProblemCandidates], strategies: Mapping[str, Strategy], *,
                   n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Strategy × accuracy with 95 % bootstrap CIs over problems.

    Columns: strategy, correct, n, accuracy, ci_low, ci_high. Problems without a gold answer are left out
    (``n`` counts graded problems). The percentile bootstrap resamples *problems* (the unit that varies
    between competitions), with the same resamples for every strategy, so the intervals of two strategies
    are computed on the same draws.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    choices = choices_frame(problems, strategies)
    n = choices["problem_id"].n_unique()
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    rows = []
    for name in strategies:
        correct = choices.filter(pl.col("strategy") == name)["correct"].to_numpy().astype(float)
        boot = correct[draws].mean(axis=1)
        rows.append({"strategy": name, "correct": int(correct.sum()), "n": n,
                     "accuracy": float(correct.mean()),
                     "ci_low": float(np.percentile(boot, 2.5)), "ci_high": float(np.percentile(boot, 97.5))})
    return pl.DataFrame(rows, schema={"strategy": pl.String, "correct": pl.Int64, "n": pl.Int64,
                                      "accuracy": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64})


# --- candidates from recorded samples ---------------------------------------------------------------

def code_ok_from_text(text: str) -> bool | None:
    """Code verdict of a recorded TIR sample: None without ```` ```output ```` blocks, False when an output
    block shows a Python exception (a ``Traceback`` or an ``...Error:`` line), else True."""
    outputs = output_blocks(text)
    if not outputs:
        return None
    return not any(output_shows_error(o) for o in outputs)


def selection_problems(run: Run, *, scored_only: bool = False) -> list[ProblemCandidates]:
    """The run's problems as :func:`kit.offline.selection.strategy_table` takes them: finished samples as
    candidates **in sample order** (so the ``first`` baseline is sample 0, not the first finisher),
    ``finish_rank`` from finish times (records) or lengths (pools), ``code_ok`` from the code calls
    (None: no code)."""
    out = []
    for p in run.scored if scored_only else run.problems:
        rank = {s.index: r for r, s in enumerate(p.finish_order())}  # indices are unique per problem
        cands = [Candidate(answer=s.answer, tokens=s.tokens, finish_rank=rank[s.index], code_ok=s.code_ok,
                           text=s.text, entropy=s.entropy_mean, entropy_tail=s.entropy_tail)
                 for s in sorted(p.done, key=lambda s: s.index)]
        out.append((p.problem_id, p.problem, p.gold, cands))
    return out




def problems_from_pool(pool: str | Path, profile: Profile | str | None = None) -> list[ProblemCandidates]:
    """A trace pool (bundled name or path, see :func:`kit.offline.traces.load_pool`) as selection problems.

    Read by :func:`kit.offline.runs.load_pool_run` (answers and gold normalised with the profile: a gold that
    is not an integer in range becomes None, i.e. ungraded; tokens by the kit's approximate tokenizer).
    Trace samples were generated one at a time, so finishing order is modelled as it would be for samples
    decoding in parallel: fewest tokens first.
    """
    return selection_problems(load_pool_run(pool, profile=profile))


def problems_from_records(path: str | Path, problem_texts: Mapping[str, str] | None = None,
                          ) -> list[ProblemCandidates]:
    """Our run records (``records.jsonl``) as selection problems: finished samples only, ranked by finish
    time, code verdict from each code call's sandbox status, gold and problem text from the ``problem``
    events (read and validated by :func:`kit.offline.runs.load_records_run`).

    ``problem_texts`` (id → text) replaces the recorded texts where given. Raises
    :class:`kit.offline.runs.RecordFormatError` for another record version, a sample without a token count or
    a file without problem events.
    """
    texts = problem_texts or {}
    return [(pid, texts.get(pid, text), gold, cands)
            for pid, text, gold, cands in selection_problems(load_records_run(path))]



# --- the strategy table of a run ----------------------------------------------------------------------


def _scorer_training_ids(scorer: CandidateScorer, run: Run) -> set[str]:
    """Problem ids of ``run`` the scorer was trained on (its ``scorer.json`` names source and problems)."""
    meta = getattr(scorer, "meta", {}) or {}
    source = str(meta.get("source", ""))
    same = source in (f"pool {run.source}", run.source) or (run.kind == "records" and Path(source) == Path(run.source))
    return set(map(str, meta.get("train_problems", []))) if same else set()


def strategies_table(run: Run, *, n_boot: int = 1000, seed: int = 0, scorer: CandidateScorer | None = None) -> pl.DataFrame:
    """Every :data:`kit.offline.selection.STRATEGIES` entry on the run's scored problems, with bootstrap CIs.

    With a scorer (:class:`kit.offline.selection.CandidateScorer`, e.g. a loaded :class:`kit.learn.scorer.Scorer`),
    a ``scorer`` row is added (σ(score)-weighted vote of the scored candidates). A scorer is
    only judged on problems it never saw: if it was trained on this run's source, its row and a
    ``majority`` row on the same held-out problems are added instead (``[held-out]``)."""
    problems = selection_problems(run, scored_only=True)
    tables = [strategy_table(problems, STRATEGIES, n_boot=n_boot, seed=seed)]
    if scorer is not None:
        seen = _scorer_training_ids(scorer, run)
        held = [p for p in problems if p[0] not in seen]
        if held:
            scored = scorer.fill(held)
            if seen:
                named = {"majority [held-out]": STRATEGIES["majority"], "scorer [held-out]": scored_strategy("vote")}
            else:
                named = {"scorer": scored_strategy("vote")}
            tables.append(strategy_table(scored, named, n_boot=n_boot, seed=seed))
        else:
            run.notes.append("the scorer was trained on every scored problem of this run: no scorer row")
    return pl.concat(tables).select(pl.lit(run.name).alias("run"), pl.all())




__all__ = [
    "STRATEGIES", "Candidate", "ProblemCandidates", "SampleWeights", "Strategy", "choices_frame",
    "code_ok_from_text", "first", "first_finish", "first_finish_strategy", "majority_strategy", "majority_vote",
    "problems_from_pool", "problems_from_records", "random_strategy", "scored_strategy", "strategy_table",
    "to_votes", "weighted", "weighted_strategy",
]
