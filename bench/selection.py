"""Benchmark: answer-selection strategies × accuracy on every recorded pool, with 95 % bootstrap CIs.

For each pool (the bundled ones, and the full sets under ``../shared/data/traces`` when present) the
table has every strategy of :data:`kit.offline.selection.STRATEGIES`, a weighted-vote sensitivity row or two,
and the trained scorer: a tiny-model outcome reward model (``training/configs/scorer_tiny.yaml``)
evaluated **out of fold** (2 folds split by problem: each problem is scored by a scorer that never saw
it). The tiny model is random-weight and trains 2 steps, so its rows are expected at chance level; they
show that the path runs end to end, not what a real scorer does (recipe in docs/selection.md).

It also checks the claim "the first finished sample is right more often than a random one" (42 % vs
34 % for R1-Distill-1.5B on AIME, quoted in issue 8) on what we have: the first-finishing sample's
accuracy (strict: the shortest sample, answer or not, and FFS: the first *answered* one) vs the
expected accuracy of a random sample (pass@1, exact: mean share of correct samples).

    .venv/bin/python bench/selection.py [--no-scorer] [--json runs/bench_selection.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kit.offline.selection import (
    STRATEGIES,
    ProblemCandidates,
    SampleWeights,
    Strategy,
    problems_from_pool,
    strategy_table,
    weighted_strategy,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "traces"
BUNDLED = ("skythought_aime24", "nemoskills", "tora_gsm8k")
FULL = {"skythought_aime24": "skythought_32b_aime24", "nemoskills": "nemoskills_fixture", "tora_gsm8k": "tora_gsm8k"}
EXTRA: dict[str, Strategy] = {
    "weighted_len1": weighted_strategy(SampleWeights(length_power=1.0)),
    "weighted_2nd_place": weighted_strategy(SampleWeights(length_power=0.0, small_answer_weight=0.6)),
}
"""Sensitivity rows: a stronger length prior; the AIMO2 2nd place's 0.6 for answers <= 20 or multiples of 100."""


def first_finish_claim(problems: list[ProblemCandidates]) -> dict[str, float]:
    graded = [p for p in problems if p[2] is not None]
    pass1 = statistics.fmean(sum(c.answer == gold for c in cands) / len(cands) for _, _, gold, cands in graded)
    strict = statistics.fmean(next(c for c in cands if c.finish_rank == 0).answer == gold
                              for _, _, gold, cands in graded)
    ffs = statistics.fmean(STRATEGIES["first_finish"](text, cands) == gold for _, text, gold, cands in graded)
    correct_len = [c.tokens for _, _, g, cs in graded for c in cs if c.answer == g]
    wrong_len = [c.tokens for _, _, g, cs in graded for c in cs if c.answer is not None and c.answer != g]
    return {"random_sample_pass1": pass1, "first_finished_sample": strict, "first_answered_sample": ffs,
            "median_tokens_correct": statistics.median(correct_len) if correct_len else float("nan"),
            "median_tokens_wrong_answered": statistics.median(wrong_len) if wrong_len else float("nan")}


def scorer_strategies(problems: list[ProblemCandidates], workdir: Path, source: str,
                      ) -> tuple[list[ProblemCandidates], dict, str]:
    """Out-of-fold scores from the tiny scorer recipe, and the two scorer strategies."""
    from kit.learn.data import DataError
    from kit.learn.scorer import cross_fit
    from kit.offline.selection import scored_strategy
    from training.common import load_config, resolve_model
    from training.scorer import ScorerConfig

    cfg = load_config(ScorerConfig, ROOT / "training" / "configs" / "scorer_tiny.yaml")
    try:
        scored, results = cross_fit(resolve_model(cfg.model), problems, workdir, folds=2, seed=cfg.split_seed,
                                    fmt=cfg.input_format(), args=cfg,
                                    pairs_per_problem=cfg.pairs_per_problem, source=f"pool {source}")
    except DataError as exc:
        return problems, {}, f"scorer not trained: {exc}"
    accs = [r.holdout_pair_accuracy for r in results]
    note = ("scorer: tiny random Qwen2, " + ", ".join(f"fold {k}: {r.train_pairs} pairs, held-out pair accuracy "
            + ("n/a" if a is None else f"{a:.2f}") for k, (r, a) in enumerate(zip(results, accs, strict=True))))
    return scored, {"scorer_vote (tiny, out-of-fold)": scored_strategy("vote"),
                    "scorer_best (tiny, out-of-fold)": scored_strategy("best")}, note


def _same_samples(a: str | Path, b: str | Path) -> bool:
    """Whether two pools hold the same samples (the bundled pools are gzip copies of ../shared files)."""
    from kit.offline.traces import load_pool

    def key(pool: str | Path) -> list[tuple[str, str, str]]:
        return [(s.problem_id, s.gold, s.text) for s in load_pool(pool)]

    return key(a) == key(b)


def markdown(table, baseline: float) -> str:
    lines = ["| strategy | correct / n | accuracy | 95 % CI | vs majority |", "|---|---|---|---|---|"]
    for r in table.iter_rows(named=True):
        ratio = r["accuracy"] / baseline if baseline else float("nan")
        lines.append(f"| {r['strategy']} | {r['correct']} / {r['n']} | {r['accuracy']:.3f} | "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {ratio:.2f} |")
    return "\n".join(lines)


def bench_pool(name: str, source: str | Path, *, scorer: bool, workdir: Path) -> dict:
    start = time.perf_counter()
    problems = problems_from_pool(source)
    strategies = {**STRATEGIES, **EXTRA}
    note = ""
    if scorer:
        problems, extra, note = scorer_strategies(problems, workdir / name, name)
        strategies.update(extra)
    table = strategy_table(problems, strategies, n_boot=2000, seed=0)
    baseline = table.filter(table["strategy"] == "majority")["accuracy"].item()
    n_samples = sorted({len(c) for _, _, _, c in problems})
    return {"pool": name, "source": str(source), "problems": len(problems),
            "graded": int(table["n"][0]), "samples_per_problem": n_samples, "table": table.to_dicts(),
            "markdown": markdown(table, baseline), "claim": first_finish_claim(problems), "scorer_note": note,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-scorer", action="store_true", help="skip the (tiny, CPU) trained scorer rows")
    ap.add_argument("--json", type=Path, default=None, help="write all results as JSON here")
    args = ap.parse_args(argv)
    sources: list[tuple[str, str | Path]] = [(p, p) for p in BUNDLED]
    for name, folder in FULL.items():
        if not (SHARED / folder).is_dir():
            continue
        if _same_samples(name, SHARED / folder):
            print(f"{SHARED / folder}: the same samples as the bundled pool {name} (its table applies)")
        else:
            sources.append((f"{name} (full set, ../shared)", SHARED / folder))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-selection-") as tmp:
        for name, source in sources:
            r = bench_pool(name, source, scorer=not args.no_scorer, workdir=Path(tmp))
            results.append(r)
            print(f"\n### {name}: {r['problems']} problems ({r['graded']} graded), "
                  f"{'/'.join(map(str, r['samples_per_problem']))} samples each  ({r['seconds']:.1f} s)\n")
            print(r["markdown"])
            c = r["claim"]
            print(f"\nrandom sample (pass@1) {c['random_sample_pass1']:.3f}; first finished sample "
                  f"{c['first_finished_sample']:.3f}; first answered sample {c['first_answered_sample']:.3f}; "
                  f"median tokens correct {c['median_tokens_correct']:.0f} vs wrong {c['median_tokens_wrong_answered']:.0f}")
            if r["scorer_note"]:
                print(r["scorer_note"])
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"\njson: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
