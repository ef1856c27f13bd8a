"""The accuracy-vs-token-budget curve, from recorded samples alone (no re-generation).

Each finished sample of a scored problem is tokenised once (the run's tokenizer, end offsets cached); at
budget ``B`` a longer sample is cut at its ``B``-th token and its answer re-read from the cut text: what
the solver would have read from a sample stopped at ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from kit.offline.runs import Run, answer_of, token_ends, track
from kit.runtime.voting import Vote, majority

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_BUDGETS = (1000, 2000, 4000, 6000, 8000, 12000, 16000, 24000, 32000)
"""Token budgets of the budget curve (the 1k-32k range of AIMO-style max_tokens settings)."""


def budget_curve(run: Run, budgets: Sequence[int], console: Console | None = None) -> pl.DataFrame:
    """Accuracy as a function of the token budget, from the recorded samples alone.

    Each finished sample of a scored problem is tokenised once (:attr:`Run.tokenizer`, end offsets
    cached); at budget ``B`` a sample longer than ``B`` tokens is cut at the end of its ``B``-th token and
    its answer re-extracted from the cut text (what the solver reads from a sample stopped at max_tokens),
    a shorter one keeps its full answer. Columns: pass@1 and maj@n (vote of all finished samples, ties to
    the larger answer) averaged over problems, mean tokens used per sample, share of samples cut and of
    samples without an answer.
    """
    pairs = [(p, s) for p in run.scored for s in p.done]
    ends = token_ends(run, pairs, console)
    cache: dict[str, int | None] = {}
    full = [answer_of(s.text, run.profile, cache) for _, s in pairs]
    rows = []
    for budget in track(sorted(set(budgets)), f"budget curve {run.name}", console):
        by_problem: dict[str, list[int | None]] = {}
        used = cut = 0
        for (p, s), e, a in zip(pairs, ends, full, strict=True):
            if len(e) > budget:
                a = answer_of(s.text[: int(e[budget - 1])], run.profile, cache)
                cut += 1
            used += min(len(e), budget)
            by_problem.setdefault(p.problem_id, []).append(a)
        golds = {p.problem_id: p.gold for p in run.scored}
        per_sample = [sum(a == golds[pid] for a in ans) / len(ans) for pid, ans in by_problem.items()]
        votes = [majority([Vote(a) for a in ans]) == golds[pid] for pid, ans in by_problem.items()]
        flat = [a for ans in by_problem.values() for a in ans]
        rows.append({"run": run.name, "budget": budget,
                     "pass@1": sum(per_sample) / len(per_sample) if per_sample else None,
                     "maj@n": sum(votes) / len(votes) if votes else None,
                     "tokens/sample": used / len(pairs) if pairs else None,
                     "cut": cut / len(pairs) if pairs else None,
                     "no_answer": sum(a is None for a in flat) / len(flat) if flat else None})
    schema = {"run": pl.String, "budget": pl.Int64, "pass@1": pl.Float64, "maj@n": pl.Float64,
              "tokens/sample": pl.Float64, "cut": pl.Float64, "no_answer": pl.Float64}
    return pl.DataFrame(rows, schema=schema)
