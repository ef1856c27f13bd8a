"""Evaluate runs offline: every metric of every run side by side, the budget curve and the answer-selection table.

A *run* (:mod:`kit.offline.runs`) is one set of samples per problem, from our own run records or from a
recorded trace pool; nothing is re-generated, so a 5-hour run's questions (how many samples? which token
budget? which vote?) are answered in seconds. :func:`evaluate` gathers :mod:`kit.offline.metrics`,
:mod:`kit.offline.budget` and :mod:`kit.offline.selection` into one :class:`Evaluation`;
:mod:`kit.offline.report` writes it out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from kit.offline.budget import DEFAULT_BUDGETS, budget_curve
from kit.offline.finish_order import finish_order
from kit.offline.metrics import default_ks, finished_samples_frame, problem_table, run_summary
from kit.offline.runs import Run, verify_token_counts
from kit.offline.selection import CandidateScorer, strategies_table

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Evaluation:
    runs: list[Run]
    ks: list[int]
    budgets: list[int]
    summary: pl.DataFrame
    problems: pl.DataFrame
    samples: pl.DataFrame
    curve: pl.DataFrame
    strategies: pl.DataFrame
    finish: pl.DataFrame = field(default_factory=pl.DataFrame)
    """Per run, what finishing first says for this model (:mod:`kit.offline.finish_order`)."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return _clean({
            "runs": [{"name": r.name, "kind": r.kind, "source": r.source, "model": r.model,
                      "profile": r.profile.name, "tokenizer": r.tokenizer.name if r.tokenizer else None,
                      "recount_ratio": r.recount_ratio, "notes": r.notes} for r in self.runs],
            "ks": self.ks, "budgets": self.budgets,
            "metrics": self.summary.to_dicts(), "problems": self.problems.to_dicts(),
            "budget_curve": self.curve.to_dicts(), "strategies": self.strategies.to_dicts(),
            "finish_order": self.finish.to_dicts(),
            "seconds": round(self.seconds, 3),
        })


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def evaluate(runs: Sequence[Run], *, ks: Sequence[int] | None = None,
             budgets: Sequence[int] = DEFAULT_BUDGETS, n_boot: int = 1000, seed: int = 0,
             strategies: bool = True, scorer: CandidateScorer | None = None,
             console: Console | None = None) -> Evaluation:
    """All metrics of every run: summary, per-problem rows, budget curve, strategy table (with a trained
    scorer's row when a ``scorer`` is given, e.g. ``kit.learn.scorer.Scorer.load(folder)``)."""
    t0 = time.perf_counter()
    runs = list(runs)
    max_n = max((len(p.done) for r in runs for p in r.problems), default=0)
    ks = sorted(set(ks)) if ks else default_ks(max_n)
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be >= 1, got {ks}")
    if not budgets or any(b < 1 for b in budgets):
        raise ValueError(f"budgets must be >= 1 tokens, got {list(budgets)}")
    for run in runs:
        verify_token_counts(run, console)
    loaded_scorer = scorer if strategies else None
    samples = finished_samples_frame(runs)
    tables = [problem_table(r, ks) for r in runs]
    summary = pl.DataFrame([run_summary(r, t, samples, ks) for r, t in zip(runs, tables, strict=True)],
                           infer_schema_length=None)
    curve = pl.concat([budget_curve(r, budgets, console) for r in runs])
    strat = pl.concat([strategies_table(r, n_boot=n_boot, seed=seed, scorer=loaded_scorer)
                       for r in runs if r.scored],
                      how="diagonal_relaxed") if strategies and any(r.scored for r in runs) else pl.DataFrame()
    orders = [f.row() for r in runs if (f := finish_order(r, n_boot=n_boot, seed=seed)) is not None]
    return Evaluation(runs=runs, ks=list(ks), budgets=sorted(set(budgets)), summary=summary,
                      problems=pl.concat(tables, how="diagonal_relaxed"), samples=samples, curve=curve,
                      strategies=strat, finish=pl.DataFrame(orders) if orders else pl.DataFrame(),
                      seconds=time.perf_counter() - t0)
