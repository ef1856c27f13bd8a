"""The accuracy-vs-token-budget curve, from recorded samples alone (no re-generation).

Each finished sample of a scored problem is tokenised once (the run's tokenizer, end offsets cached); at
budget ``B`` a longer sample is cut at its ``B``-th token and its answer re-read from the cut text: what
the solver would have read from a sample stopped at ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from kit.offline.runs import EvalProblem, EvalSample, Run, answer_of, token_ends, track
from kit.runtime.voting import Vote, majority

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_BUDGETS = (1000, 2000, 4000, 6000, 8000, 12000, 16000, 24000, 32000)
"""Token budgets of the budget curve (the 1k-32k range of AIMO-style max_tokens settings)."""


def _answers_at(run: Run, pairs: Sequence[tuple[EvalProblem, EvalSample]], budgets: Sequence[int],
                console: Console | None) -> tuple[list[list[int | None]], list[int]]:
    """Per sample, its answer at each budget (ascending), and its length in the tokens the budget counts.
    An attempt log's attempts are cut by their own rules (:meth:`kit.offline.attempt_logs.LoggedAttempt.
    answers_at`: a Harmony attempt re-read from its ids by the solver's reader); a text is cut at the end of
    its ``B``-th token (the run's tokenizer) and re-read."""
    if run.logged:
        return ([run.logged[(p.problem_id, s.index)].answers_at(budgets, run.profile)
                 for p, s in track(pairs, f"budget curve {run.name}", console)], [s.tokens for _, s in pairs])
    ends = token_ends(run, pairs, console)
    cache: dict[str, int | None] = {}
    out = []
    for (_, s), e in zip(pairs, ends, strict=True):
        full = answer_of(s.text, run.profile, cache)
        out.append([answer_of(s.text[: int(e[b - 1])], run.profile, cache) if len(e) > b else full for b in budgets])
    return out, [len(e) for e in ends]


def budget_curve(run: Run, budgets: Sequence[int], console: Console | None = None) -> pl.DataFrame:
    """Accuracy as a function of the token budget, from the recorded samples alone.

    Each finished sample of a scored problem is tokenised once (:attr:`Run.tokenizer`, end offsets
    cached); at budget ``B`` a sample longer than ``B`` tokens is cut at the end of its ``B``-th token and
    its answer re-extracted from the cut text (what the solver reads from a sample stopped at max_tokens),
    a shorter one keeps its full answer. Attempt logs carry their own token counts and are cut by their
    own rules. Columns: pass@1 and maj@n (vote of all finished samples, ties to the larger answer)
    averaged over problems, mean tokens used per sample, share of samples cut and of samples without an
    answer.
    """
    pairs = [(p, s) for p in run.scored for s in p.done]
    ordered = sorted(set(budgets))
    answers, lengths = _answers_at(run, pairs, ordered, console)
    golds = {p.problem_id: p.gold for p in run.scored}
    rows = []
    for k, budget in enumerate(ordered):
        by_problem: dict[str, list[int | None]] = {}
        used = cut = 0
        for (p, _), at, n in zip(pairs, answers, lengths, strict=True):
            cut += n > budget
            used += min(n, budget)
            by_problem.setdefault(p.problem_id, []).append(at[k])
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
