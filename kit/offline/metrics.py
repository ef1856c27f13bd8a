"""Accuracy estimators and per-run metric tables (definitions and citations in ``docs/evaluation.md``).

* pass@1 — per problem the share of correct samples, averaged over problems;
* pass@k — Chen et al. 2021's unbiased estimator ``1 - C(n-c, k) / C(n, k)``, in its numerically stable
  product form (:func:`pass_at_k`);
* maj@k — the probability that a majority vote over ``k`` samples drawn without replacement is right,
  computed *exactly* for any ``n`` with a generating function (:func:`maj_at_k`);
* selected accuracy — the run's own chosen answer (records) or the majority of all samples (pools);
* tokens, seconds, no-answer share, code-call statistics.

Metrics use *finished* samples only (finish reason stop/length/repetition/context, as the solver's own
vote): aborted samples were cut by early stopping, not by the model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import polars as pl

from kit.offline.runs import Run


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code", eq. 1): ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (the paper's numerically stable form): the binomial
    coefficients themselves overflow floats for a few hundred samples.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _poly_mul(a: list[int], b: list[int], degree: int) -> list[int]:
    """Product of two integer polynomials (coefficient lists), truncated above ``degree``."""
    out = [0] * min(len(a) + len(b) - 1, degree + 1)
    for i, x in enumerate(a):
        if x == 0 or i > degree:
            continue
        for j, y in enumerate(b[: degree - i + 1]):
            out[i + j] += x * y
    return out


def maj_at_k(answers: Sequence[int | None], gold: int, k: int) -> float:
    """Probability that the majority vote over ``k`` of the ``answers`` (drawn without replacement) is
    ``gold``; ``None`` answers are abstentions. Exact for any number of samples.

    Votes are plain (weight 1) and ties go to the larger answer, as :func:`kit.runtime.voting.majority`'s default.
    Why exact instead of enumeration or Monte Carlo: the vote only depends on how many draws each answer
    gets, so with ``x`` draws of the gold answer it wins iff every other answer ``a`` gets at most ``x``
    draws (``x - 1`` if ``a`` would win a tie). The number of such draws is a coefficient of the product
    of the truncated generating functions ``sum_{y <= cap_a} C(m_a, y) t^y`` (times ``(1 + t)^m0`` for the
    abstentions): ``sum_x C(m_g, x) [t^(k-x)] prod(...) / C(n, k)``, in exact integer arithmetic.
    """
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n, got n={n}, k={k}")
    counts = Counter(a for a in answers if a is not None)
    m_gold = counts.pop(gold, 0)
    if m_gold == 0:
        return 0.0
    abstentions = n - m_gold - sum(counts.values())
    total = 0
    for x in range(1, min(m_gold, k) + 1):
        rest = k - x
        poly = [math.comb(abstentions, j) for j in range(min(abstentions, rest) + 1)]
        for answer, m in counts.items():
            cap = min(m, x if gold > answer else x - 1)
            poly = _poly_mul(poly, [math.comb(m, y) for y in range(cap + 1)], rest)
        if rest < len(poly):
            total += math.comb(m_gold, x) * poly[rest]
    return total / math.comb(n, k)



def default_ks(max_n: int) -> list[int]:
    """1, 2, 4, 8, ... up to ``max_n``, and ``max_n`` itself."""
    ks = [k for k in (2**i for i in range(12)) if k <= max_n]
    return sorted({*ks, max_n}) if max_n >= 1 else []


def finished_samples_frame(runs: Sequence[Run]) -> pl.DataFrame:
    """One row per finished sample of every run (no texts)."""
    rows = [{"run": r.name, "problem_id": p.problem_id, "index": s.index, "scored": p.gold is not None,
             "answer": s.answer, "correct": p.gold is not None and s.answer == p.gold, "tokens": s.tokens,
             "seconds": s.seconds, "code_calls": s.code_calls, "code_errors": s.code_errors}
            for r in runs for p in r.problems for s in p.done]
    schema = {"run": pl.String, "problem_id": pl.String, "index": pl.Int64, "scored": pl.Boolean,
              "answer": pl.Int64, "correct": pl.Boolean, "tokens": pl.Int64, "seconds": pl.Float64,
              "code_calls": pl.Int64, "code_errors": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def problem_table(run: Run, ks: Sequence[int]) -> pl.DataFrame:
    """Per-problem metrics: samples, correct, pass@k and maj@k (null where fewer than k samples finished
    or the problem is unscored), selected answer, tokens, seconds, no-answer share, code calls."""
    rows = []
    for p in run.problems:
        done = p.done
        answers = [s.answer for s in done]
        n = len(done)
        c = sum(a == p.gold for a in answers) if p.gold is not None else None
        row: dict[str, Any] = {
            "run": run.name, "problem_id": p.problem_id, "gold": p.gold, "selected": p.selected,
            "selected_correct": None if p.gold is None else p.selected == p.gold,
            "samples": n, "unfinished": len(p.samples) - n, "correct": c,
        }
        for k in ks:
            ok = c is not None and n >= k
            row[f"pass@{k}"] = pass_at_k(n, c, k) if ok else None  # type: ignore[arg-type]
            row[f"maj@{k}"] = maj_at_k(answers, p.gold, k) if ok else None  # type: ignore[arg-type]
        row |= {
            "no_answer": sum(a is None for a in answers) / n if n else None,
            "tokens": p.tokens,
            "tokens/sample": sum(s.tokens for s in done) / n if n else None,
            "seconds": p.seconds,
            "code_calls": sum(s.code_calls for s in done),
            "code_errors": sum(s.code_errors for s in done),
            "reason": p.reason,
        }
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("gold", "selected").cast(pl.Int64), pl.col("seconds").cast(pl.Float64),
        *(pl.col(f"{m}@{k}").cast(pl.Float64) for k in ks for m in ("pass", "maj")))


def run_summary(run: Run, problems: pl.DataFrame, samples: pl.DataFrame, ks: Sequence[int]) -> dict[str, Any]:
    """Overall metrics of one run (one row of the side-by-side table). Accuracy metrics (pass@k, maj@k,
    selected, no-answer share) use the scored problems, pass@k / maj@k those with at least k finished
    samples; cost metrics (tokens, seconds, code calls) every problem."""
    scored = problems.filter(pl.col("gold").is_not_null())
    smp = samples.filter(pl.col("run") == run.name)
    acc = scored.select(
        pl.len().alias("scored"),
        *(pl.col(f"{m}@{k}").mean() for k in ks for m in ("pass", "maj")),
        pl.col("selected_correct").cast(pl.Float64).mean().alias("selected"),
    ).row(0, named=True)
    stats = smp.select(
        pl.len().alias("samples"),
        pl.col("tokens").mean().alias("tokens/sample"),
        pl.col("seconds").mean().alias("seconds/sample"),
        pl.col("answer").filter(pl.col("scored")).is_null().mean().alias("no_answer"),
        pl.col("code_calls").mean().alias("code_calls/sample"),
        (pl.col("code_calls") > 0).mean().alias("code_share"),
        (pl.col("code_errors").sum() / pl.col("code_calls").sum()).alias("code_error_rate"),
    ).row(0, named=True)
    per_problem = problems.select(
        pl.col("tokens").mean().alias("tokens/problem"),
        pl.col("seconds").mean().alias("seconds/problem"),
        pl.col("unfinished").sum().alias("unfinished"),
    ).row(0, named=True)
    out = {"run": run.name, "kind": run.kind, "problems": problems.height, **acc, **stats, **per_problem}
    if not out["code_calls/sample"]:
        out["code_error_rate"] = None
    out["recorded pass@1"] = recorded_pass1(run)
    return out


def recorded_pass1(run: Run) -> float | None:
    """pass@1 by the recording harness's own verdicts (trace pools and attempt tables that keep one), beside
    the kit's reading of the same samples: where the two differ, the answers were read differently. None
    when no sample carries a verdict."""
    per_problem = [[s.recorded_correct for s in p.done if s.recorded_correct is not None] for p in run.problems]
    rates = [sum(v) / len(v) for v in per_problem if v]
    return sum(rates) / len(rates) if rates else None
