"""Command-line entry points of the kit (``python -m kit ...``).

Errors the user can fix (a missing file, an unknown profile) are printed as one line and exit code 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kit.competition import DEFAULT_PROFILE, PROFILES
from kit.config import ConfigError

KnownError = (FileNotFoundError, ValueError, ConfigError)
"""Errors the user can fix: printed as one line, exit code 2."""
ENGINE_ERRORS = {"PresetDoesNotFit", "EngineStartError", "EngineStartTimeout"}
"""Engine errors reported the same way (matched by name: importing them would import vLLM's stack)."""


def _seconds(text: str) -> float:
    """'600', '10m', '1.5h', '90s' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 600, 90s, 10m, 1.5h)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return value


def _add_dryrun(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dryrun",
        help="run the submission's solving path locally over a problem set",
        description=(
            "Local dry-run of the submission path: problems one at a time in random order (like the Kaggle "
            "gateway), each with a deadline from the time limit, solved with samples, tool calls, voting and "
            "early stopping on a real engine. Without --model, vLLM runs a built-in tiny random model on the "
            "CPU (answers are random: it checks the pipeline). --engine replay plays recorded samples."
        ),
    )
    p.add_argument("--problems", default=None,
                   help="problem CSV/jsonl or bundled set (aimo2_reference [default], aime24, aime25, aimo1_train)")
    p.add_argument("--model", default=None, help="model folder for vLLM (default: built-in tiny model)")
    p.add_argument("--engine", default="vllm", choices=["vllm", "replay"], help="generation backend")
    p.add_argument("--traces", default="skythought_aime24",
                   help="replay engine: bundled trace pool or trace folder/file (default: %(default)s)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help="competition profile (default: %(default)s)")
    p.add_argument("--preset", default=None, help="vLLM engine preset: cpu, l4x4, h100 (default: cpu for the "
                                                  "tiny model, l4x4 otherwise)")
    p.add_argument("--config", type=Path, default=None, help="YAML file with a 'solver:' section")
    p.add_argument("--time-limit", type=_seconds, default=None,
                   help="time for the whole run, e.g. 600, 10m, 4.5h (default: the profile's limit)")
    p.add_argument("--samples", type=int, default=None, help="samples per problem")
    p.add_argument("--max-tokens", type=int, default=None, help="generated tokens per sample")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems (after shuffling)")
    p.add_argument("--seed", type=int, default=0, help="problem order and sampling seed")
    p.add_argument("--no-shuffle", action="store_true", help="keep the file order")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for records.jsonl and summary.json (default: runs/dryrun-<time>)")
    p.add_argument("--policy", default="ours", help="time-bank policy: ours, second_place, linspace, equal")
    p.add_argument("--verbose", action="store_true", help="show vLLM's own INFO logs")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate whole competitions to compare time policies",
        description=(
            "Monte Carlo over simulated competitions: problems drawn from a pool of recorded samples in "
            "random order, a time bank per policy, samples racing on a hardware throughput model, the "
            "solver's voting and early-stop code. Prints policy x (expected score +- 95%% CI, mean/p99 "
            "time, overruns, fraction of the oracle) and writes a plot."
        ),
    )
    p.add_argument("--pool", default="skythought_aime24",
                   help="skythought_aime24 (default), synthetic, a trace file/folder, or a records.jsonl")
    p.add_argument("--policies", default="ours,second_place,linspace,equal",
                   help="comma-separated policies (the oracle is always added)")
    p.add_argument("--runs", type=int, default=1000, help="simulated competitions per policy")
    p.add_argument("--problems", type=int, default=50, help="problems per competition")
    p.add_argument("--hardware", default="l4x4-7b-awq", help="speed model: l4x4-7b-awq, l4x4-14b-awq")
    p.add_argument("--startup", type=_seconds, default=600.0, help="model loading time before the first problem")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    p.add_argument("--plot", type=Path, default=Path("runs/simulate.png"), help="per-problem time plot (PNG)")


def _simulate(args: argparse.Namespace) -> int:
    import json
    import time

    from kit.engines.replay import SPEED_PRESETS
    from kit.simulate import compare, load_pool_arg, plot

    if args.hardware not in SPEED_PRESETS:
        raise ValueError(f"unknown hardware {args.hardware!r}; choose one of {sorted(SPEED_PRESETS)}")
    if args.runs < 2:
        raise ValueError(f"--runs must be >= 2 for a confidence interval, got {args.runs}")
    start = time.perf_counter()
    pool = load_pool_arg(args.pool, args.profile, args.seed)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    reports = compare(pool, names, runs=args.runs, seed=args.seed, profile=args.profile,
                      speed=SPEED_PRESETS[args.hardware], n_problems=args.problems,
                      startup_seconds=args.startup)
    print(f"pool {args.pool} ({len(pool)} problems), {args.runs} competitions x {args.problems} problems, "
          f"hardware {args.hardware}, start-up {args.startup:.0f} s, profile {args.profile}")
    print(f"{'policy':<14}{'score':>8}{'95% CI':>18}{'mean s':>9}{'p99 s':>9}{'overruns':>10}{'of oracle':>11}")
    for r in reports:
        print(f"{r.policy:<14}{r.expected_score:>8.2f}   [{r.ci_low:6.2f}, {r.ci_high:6.2f}]"
              f"{r.mean_seconds:>9.0f}{r.p99_seconds:>9.0f}{r.overruns:>10}{r.oracle_fraction:>11.3f}")
    plot(reports, args.plot, f"{args.pool}: seconds per problem ({args.hardware})")
    print(f"plot: {args.plot}   ({time.perf_counter() - start:.1f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.row() for r in reports], indent=2))
        print(f"json: {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kit", description="aimo-kit command line")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dryrun(sub)
    _add_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "dryrun":
            from kit.dryrun import DryRunOptions, run

            summary = run(DryRunOptions(
                problems=args.problems, model=args.model, engine=args.engine, traces=args.traces,
                profile=args.profile, preset=args.preset, config=args.config, time_limit=args.time_limit,
                out=args.out, samples=args.samples, max_tokens=args.max_tokens, seed=args.seed,
                shuffle=not args.no_shuffle, limit=args.limit, verbose=args.verbose,
                policy=args.policy))
            return 0 if summary.problems else 1
        if args.command == "simulate":
            return _simulate(args)
    except KnownError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ in ENGINE_ERRORS:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 1
