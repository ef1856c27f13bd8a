"""Benchmark: the difficulty / token predictor — held-out quality, and what its hook does to the time bank.

1. Predictor quality, out of fold (split by problem: every problem is predicted by a model that never
   saw it): Spearman, Pearson and MAE on log-tokens vs a constant prediction, on each recorded pool
   (``../shared/data/traces`` when present, else the identical bundled copies). The encoder is the
   offline *random* tiny ModernBERT (``training/configs/difficulty_tiny.yaml``; no hub here), so these
   rows measure the pipeline on CPU, not what ModernBERT-base would learn.
2. Simulated competitions (:func:`kit.learn.difficulty.simulate_hooks`; 50 problems, AIMO2 profile, the same
   seeds for every hook, paired deltas against plain ``Ours()``) on SkyThought-32B AIME24 (30 problems ×
   11 real samples) for hooks: none, the cross-fitted predictor, and two oracles built from the true
   targets — with never-solved problems capped low (the default rule) and at their longest attempt —
   under four throughputs: the 7B and 14B AWQ speed models, and the 14B one ×2 and ×3 (time binds; the
   traces' own model is a 32B). Where time binds, two controls: a placebo (the predicted factors
   shuffled across problems: same overall stretch, random allocation) and a constant factor 0.8. Then
   the oracles on the calibrated synthetic pool (60 × 32 samples).

    .venv/bin/python bench/difficulty.py [--runs 1000] [--json runs/bench_difficulty.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

from kit.learn.difficulty import (
    HookResult,
    ProblemSamples,
    TargetRule,
    factors_from_tokens,
    problems_from_traces,
    regression_metrics,
    simulate_hooks,
    table_hook,
    targets_frame,
)
from kit.runtime.throughput import SpeedModel
from kit.sim.simulate import SimProblem, SyntheticSpec, pool_from_traces, pool_synthetic
from training.common import load_config
from training.difficulty import DifficultyConfig, SourceConfig, crossfit, load_targets, quiet

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "traces"
FULL = {"skythought_aime24": "skythought_32b_aime24", "nemoskills": "nemoskills_fixture", "tora_gsm8k": "tora_gsm8k"}
POOLS: dict[str, tuple[int, list[str]]] = {
    # pool: (folds, config overrides); GSM8K is large and its problems short: one pass, short inputs
    "skythought_aime24": (5, []),
    "nemoskills": (5, []),
    "tora_gsm8k": (2, ["epochs=1", "batch_size=32", "max_length=128"]),
}


def pool_path(name: str) -> str:
    full = SHARED / FULL[name]
    return str(full) if full.is_dir() else name


def speeds() -> dict[str, SpeedModel]:
    b = SpeedModel.l4x4_14b_awq()

    def scaled(k: float) -> SpeedModel:
        return SpeedModel(b.step_s * k, b.per_seq_s * k, b.per_ctx_token_s * k, b.prefill_per_token_s * k)

    return {"7B AWQ": SpeedModel.l4x4_7b_awq(), "14B AWQ": b, "14B x2": scaled(2), "14B x3": scaled(3)}


def quality(name: str, cfg: DifficultyConfig, folds: int):
    """Cross-fitted predictions on one pool, its metrics and the cap used for never-solved problems."""
    raw = load_targets(dataclasses.replace(cfg, target=TargetRule(unsolved="drop")))
    cap = max(int(0.25 * statistics.median(raw["tokens"])), 1)  # a quarter of the solved median need
    cfg = dataclasses.replace(cfg, target=TargetRule(unsolved="cap", cap_tokens=cap))
    frame = load_targets(cfg)
    t0 = time.perf_counter()
    fitted = crossfit(cfg, frame, folds)
    m = regression_metrics(fitted["predicted"].to_list(), fitted["tokens"].to_list(),
                           baseline=statistics.geometric_mean(frame["tokens"].to_list()))
    m |= {"problems": frame.height, "censored": int(frame["censored"].sum()), "cap_tokens": cap,
          "seconds": time.perf_counter() - t0}
    print(f"| {name} | {frame.height} ({m['censored']} never solved, cap {cap}) | {folds} | {m['spearman']:.3f} | "
          f"{m['pearson_log']:.3f} | {m['mae_log']:.3f} | {m['mae_log_baseline']:.3f} | {m['seconds']:.0f} |",
          flush=True)
    return fitted, frame, m, cfg.target


def table(title: str, results: list[HookResult]) -> list[dict]:
    print(f"\n{title}\n\n| hook | expected score | 95 % CI | Δ vs no hook | Δ 95 % CI | mean s | overruns |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.name} | {r.expected_score:.2f} | [{r.ci_low:.2f}, {r.ci_high:.2f}] | {r.delta:+.2f} | "
              f"[{r.delta_low:+.2f}, {r.delta_high:+.2f}] | {r.mean_seconds:.0f} | {r.overruns} |", flush=True)
    return [dataclasses.asdict(r) for r in results]


def controls(pool: list[SimProblem], predicted: dict[str, float], speed: SpeedModel, runs: int,
             shuffles: int = 8) -> dict:
    """Is the predictor's *allocation* what helps? Placebo: the same factors shuffled across problems
    (same mean stretch, random assignment), ``shuffles`` times; and a constant factor 0.8 (a smaller
    overall stretch, no allocation at all)."""
    texts, values = list(predicted), list(predicted.values())
    hooks: dict = {"none": None, "constant 0.8": lambda problem: 0.8}
    for k in range(shuffles):
        perm = values[:]
        random.Random(k).shuffle(perm)
        hooks[f"shuffle {k}"] = table_hook(dict(zip(texts, perm, strict=True)))
    res = simulate_hooks(pool, hooks, runs=runs, speed=speed)
    placebo = [r.delta for r in res if r.name.startswith("shuffle")]
    const = next(r for r in res if r.name == "constant 0.8")
    print(f"\ncontrols: placebo (predicted factors shuffled across problems, {shuffles} shuffles) "
          f"Δ mean {statistics.fmean(placebo):+.2f}, range [{min(placebo):+.2f}, {max(placebo):+.2f}]; "
          f"constant factor 0.8: Δ {const.delta:+.2f} [{const.delta_low:+.2f}, {const.delta_high:+.2f}]", flush=True)
    return {"placebo_deltas": placebo, "constant_0.8": dataclasses.asdict(const)}


def oracle_hooks(problems: list, rule: TargetRule) -> dict:
    """Hooks from the true targets under ``rule`` and under the ``longest`` censoring rule."""
    out = {}
    for name, r in (("oracle (never solved: cap)", rule), ("oracle (never solved: longest)",
                                                           dataclasses.replace(rule, unsolved="longest"))):
        t = targets_frame(problems, r)
        out[name] = table_hook(factors_from_tokens(dict(zip(t["text"], t["tokens"], strict=True))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="simulated competitions per hook and throughput")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    quiet()
    start = time.perf_counter()
    base = load_config(DifficultyConfig, ROOT / "training" / "configs" / "difficulty_tiny.yaml")
    report: dict = {"quality": {}, "simulation": {}, "controls": {}}

    print("## Held-out quality (out of fold, tiny random encoder)\n")
    print("| pool | problems | folds | Spearman | Pearson (log) | MAE (log) | MAE constant | s |")
    print("|---|---|---|---|---|---|---|---|")
    fitted_sky = rule_sky = None
    for name, (folds, overrides) in POOLS.items():
        cfg = load_config(DifficultyConfig, ROOT / "training" / "configs" / "difficulty_tiny.yaml",
                          ["log_every=0", *overrides])
        cfg = dataclasses.replace(cfg, sources=[SourceConfig(pool_path(name))], seed=base.seed)
        fitted, _, m, rule = quality(name, cfg, folds)
        report["quality"][name] = m
        if name == "skythought_aime24":
            fitted_sky, rule_sky = fitted, rule
    assert fitted_sky is not None and rule_sky is not None

    sky = pool_from_traces(pool_path("skythought_aime24"))
    problems = problems_from_traces(pool_path("skythought_aime24"))
    hooks = {"none": None,
             "predicted (tiny encoder, out of fold)": table_hook(dict(zip(fitted_sky["text"], fitted_sky["factor"],
                                                                          strict=True))),
             **oracle_hooks(problems, rule_sky)}
    predicted = dict(zip(fitted_sky["text"], fitted_sky["factor"], strict=True))
    for hw, speed in speeds().items():
        res = simulate_hooks(sky, hooks, runs=args.runs, speed=speed)
        report["simulation"][f"skythought_aime24 / {hw}"] = table(
            f"### SkyThought-32B AIME24, {hw} ({args.runs} competitions)", res)
        if hw in ("14B x2", "14B x3"):
            report["controls"][f"skythought_aime24 / {hw}"] = controls(sky, predicted, speed, args.runs)

    syn = [dataclasses.replace(p, text=p.pid) for p in pool_synthetic(SyntheticSpec())]
    syn_problems = [_as_problem(p) for p in syn]
    solved = targets_frame(syn_problems, TargetRule(unsolved="drop"))
    syn_rule = TargetRule(unsolved="cap", cap_tokens=int(0.25 * statistics.median(solved["tokens"])))
    syn_hooks = {"none": None, **oracle_hooks(syn_problems, syn_rule)}
    for hw in ("14B AWQ", "14B x2"):
        res = simulate_hooks(syn, syn_hooks, runs=args.runs, speed=speeds()[hw])
        report["simulation"][f"synthetic / {hw}"] = table(
            f"### Synthetic pool (60 × 32), {hw}, oracles only ({args.runs} competitions)", res)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"json: {args.json}")
    return 0


def _as_problem(p: SimProblem) -> ProblemSamples:
    return ProblemSamples(p.pid, p.text, tuple((a is not None and a == p.gold, t) for a, t in p.samples))


if __name__ == "__main__":
    sys.exit(main())
