"""Command-line entry points of the kit (``python -m kit ...``).

Errors the user can fix (a missing file, an unknown profile) are printed as one line and exit code 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from rich.console import Console

from kit.learn.generate import GenerateOptions, run_generate
from kit.learn.generate_ray import run_generate_ray
from kit.learn.scorer import Scorer
from kit.offline.attempt_logs import is_attempt_log, parse_column_map
from kit.offline.budget import DEFAULT_BUDGETS
from kit.offline.evaluate import evaluate
from kit.offline.finish_order import calibrated_signal
from kit.offline.report import print_summary, write_json, write_report
from kit.offline.runs import load_records_run, load_runs, logged_run
from kit.offline.traces import load_pool
from kit.runtime.config import ConfigError
from kit.runtime.difficulty_hook import DifficultyPredictor
from kit.runtime.dryrun import DryRunOptions, run_dryrun
from kit.runtime.engines.memory import PresetDoesNotFit
from kit.runtime.engines.vllm_engine import EngineStartError
from kit.runtime.problems import Problem, default_problems, load_problems
from kit.runtime.profiles import DEFAULT_PROFILE, PROFILES
from kit.runtime.run_config import STACKS, ResolvedConfig, SubmissionConfig, stack_of
from kit.runtime.sandbox import SandboxError
from kit.runtime.schedule import make_policy
from kit.runtime.throughput import SPEED_PRESETS
from kit.runtime.tiny_model import TinyModelError
from kit.sim.pools import family
from kit.sim.replay import engine_factory
from kit.sim.simulate import compare, hardware_max_seqs, load_pool_arg, plot
from kit.sim.tune import calibrate, tune

KnownError = (FileNotFoundError, ValueError, ConfigError, PresetDoesNotFit, EngineStartError, SandboxError,
              TinyModelError)
"""Errors the user can fix (a path, a value, a preset that does not fit, an engine that does not start):
printed as one line, exit code 2."""


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
            "gateway), each with a deadline from the time bank, solved with samples, tool calls, voting and "
            "early stopping on a real engine. The run configuration is the submission's (--config: a build "
            "config's 'submission:' section, or a plain mapping of its fields); the options below override it. "
            "Without a model, vLLM runs a built-in tiny random model on the CPU (answers are random: it checks "
            "the pipeline). --engine replay plays recorded samples."
        ),
    )
    p.add_argument("--config", type=Path, default=None,
                   help="YAML: a build config (its 'submission:' section) or SubmissionConfig fields (e.g. 'solver:')")
    p.add_argument("--problems", default=None,
                   help="problem CSV/jsonl or bundled set (default: the profile's reference set, aimo2_reference "
                        "or aimo3_reference; also aime24, aime25, aimo1_train, amc23, math500)")
    p.add_argument("--stack", default=None, choices=sorted(STACKS),
                   help="model family: r1 (default; R1-style, chat template + fenced code, the AIMO2 stack) or "
                        "gpt-oss (Harmony conversations with a python tool, the AIMO3 stack); sets the tiny model, "
                        "preset, solver and time policy a config leaves out")
    p.add_argument("--model", default=None, help="model folder for vLLM (default: built-in tiny model)")
    p.add_argument("--engine", default=None, choices=["vllm", "replay"], help="generation backend (default: vllm)")
    p.add_argument("--traces", default=None,
                   help="replay engine: bundled trace pool, trace folder/file, a run's records.jsonl, or a Harmony "
                        "token log (.jsonl with completion_ids: played by token ids, --stack gpt-oss) (default: "
                        "skythought_aime24)")
    p.add_argument("--profile", default=None, choices=sorted(PROFILES),
                   help=f"competition profile (default: {DEFAULT_PROFILE})")
    p.add_argument("--preset", default=None,
                   help="vLLM engine preset: cpu, l4x4, h100, cpu-gpt-oss, h100-gpt-oss (default: the stack's, "
                        "cpu/cpu-gpt-oss for the tiny model, l4x4/h100-gpt-oss otherwise)")
    p.add_argument("--time-limit", type=_seconds, default=None,
                   help="time for the whole run, e.g. 600, 10m, 4.5h (default: the profile's limit)")
    p.add_argument("--samples", type=int, default=None, help="samples per problem (upper bound for the time bank)")
    p.add_argument("--max-tokens", type=int, default=None, help="generated tokens per sample (upper bound)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems (after shuffling)")
    p.add_argument("--seed", type=int, default=None, help="the solver's sampling seed (default: the config's, 0)")
    p.add_argument("--order-seed", type=int, default=0, help="seed of the random problem order (default: 0)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the file order")
    p.add_argument("--out", type=Path, default=None,
                   help="the run's folder: records.jsonl, summary.json, submission.parquet (default: "
                        "runs/dryrun-<time>)")
    p.add_argument("--policy", default=None,
                   help="time-bank policy: ours, aimo3_baseline, second_place, linspace, equal (default: the stack's: "
                        "ours, calibrated for the stack's model family unless --config gives policy_params)")
    p.add_argument("--difficulty", type=Path, default=None,
                   help="difficulty predictor folder (python -m training.difficulty) scaling the 'ours' deadlines")
    p.add_argument("--verbose", action="store_true", help="show vLLM's own INFO logs")


def dryrun_config(args: argparse.Namespace) -> ResolvedConfig:
    """The run configuration of a dry-run, resolved once: ``--config`` (or the defaults) with the given
    options applied. ``--out`` is the run's folder (its records and report), ``--seed`` the solver's seed."""
    if args.out is None:
        args.out = Path("runs") / time.strftime("dryrun-%Y%m%d-%H%M%S")
    cfg = SubmissionConfig.from_yaml(args.config) if args.config is not None else SubmissionConfig()
    cfg = cfg.with_overrides(profile=args.profile, stack=args.stack, model=args.model, preset=args.preset,
                             engine=args.engine,
                             traces=args.traces, policy=args.policy,
                             difficulty=None if args.difficulty is None else str(args.difficulty),
                             total_seconds=args.time_limit,
                             records_dir=str(args.out))
    changes = {k: v for k, v in (("n_samples", args.samples), ("max_tokens", args.max_tokens),
                                 ("seed", args.seed)) if v is not None}
    return cfg.resolve().with_solver(**changes)


def _logged_problems(path: str) -> list[Problem]:
    """The problems of an attempt log, one per problem id (the gold as its answer)."""
    return [Problem(id=p.problem_id, problem=p.problem, answer=None if p.gold is None else str(p.gold))
            for p in logged_run(path, profile="aimo3").problems]


def _dryrun_problems(args: argparse.Namespace, cfg: SubmissionConfig) -> tuple[list[Problem], str]:
    """The problems and where they came from: ``--problems`` (a problem set, or an attempt log's problems),
    else the replay pool's, else the profile's reference set."""
    for source in (args.problems, cfg.traces if args.problems is None and cfg.engine == "replay" else None):
        if source is not None and is_attempt_log(source):
            return _logged_problems(source), f"attempt log {source}"
    if args.problems is None and cfg.engine == "replay":
        path = Path(cfg.traces)
        if path.is_file() and path.name.startswith("records") and path.suffix == ".jsonl":
            run = load_records_run(path)
            return [Problem(id=p.problem_id, problem=p.problem, answer=None if p.gold is None else str(p.gold))
                    for p in run.problems if p.problem.strip() and p.done], f"run records {path}"
        seen: dict[str, Problem] = {}
        for s in load_pool(cfg.traces):
            seen.setdefault(s.problem, Problem(id=s.problem_id, problem=s.problem, answer=s.gold))
        return list(seen.values()), f"trace pool {cfg.traces}"
    source = args.problems or default_problems(cfg.profile)
    return load_problems(source), str(source)


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
    p.add_argument("--pool", default=None,
                   help="skythought_aime24 (default), synthetic, a trace file/folder, a records.jsonl, or another "
                        "harness's attempt log: a Harmony token log (.jsonl) or an attempt table (.csv/.parquet)")
    p.add_argument("--map", dest="columns", type=parse_column_map, default=None, metavar="OLD=NEW[,...]",
                   help="rename an attempt log's columns on the way in, e.g. ground_truth=gold,total_tokens=tokens")
    p.add_argument("--policies", default=None,
                   help="comma-separated policies (default: ours,second_place,linspace,equal; under --profile aimo3 "
                        "ours,aimo3_baseline,equal,linspace); the bounds are always added")
    p.add_argument("--runs", type=int, default=1000, help="simulated competitions per policy")
    p.add_argument("--problems", type=int, default=50, help="problems per competition")
    p.add_argument("--hardware", default=None,
                   help="speed model: l4x4-7b-awq, l4x4-14b-awq, h100-7b-bf16, h100-gpt-oss-120b (--tune: a "
                        "comma-separated list)")
    p.add_argument("--startup", type=_seconds, default=600.0, help="model loading time before the first problem")
    p.add_argument("--profile", default=None, choices=sorted(PROFILES),
                   help=f"competition profile (default: aimo3 for an attempt log, else {DEFAULT_PROFILE})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=Path, default=None,
                   help="difficulty predictor folder: adds the row 'ours+difficulty' (ours with its hook)")
    p.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    p.add_argument("--plot", type=Path, default=Path("runs/simulate.png"), help="per-problem time plot (PNG)")
    p.add_argument("--tune", nargs="?", const="", default=None, metavar="POLICY",
                   help="with --pool: calibrate ours on that pool (what finishing first says for this model, checked "
                        "on held-out problems) and write the config to --out-config; without: search POLICY's "
                        "parameters (default: ours) over the pool family and --hardware (comma-separated), report "
                        "in-sample and leave-one-pool-out scores")
    p.add_argument("--config", type=Path, default=None,
                   help="a run config (kit simulate --tune --pool LOG writes one): its policy_params calibrate ours "
                        "(default: the profile's stack: R1-distill's for aimo2, gpt-oss-120b's for aimo3)")
    p.add_argument("--out-config", type=Path, default=Path("runs/ours-calibrated.yaml"),
                   help="--tune --pool: where to write the calibrated config")
    p.add_argument("--pools", default="family",
                   help="--tune: comma-separated pools (family names, bundled pools, files) or 'family' (default)")
    p.add_argument("--tune-runs", type=int, default=30, help="--tune: competitions per grid point and cell")


def _simulate_defaults(args: argparse.Namespace) -> None:
    """Profile, pool, hardware and policies the options leave out: the AIMO2 ones, or the AIMO3 ones under
    --profile aimo3 (the default for an attempt log: Harmony logs and attempt tables are the AIMO3 teams')."""
    if args.profile is None:
        log = args.pool is not None and is_attempt_log(args.pool, args.columns)
        args.profile = "aimo3" if log else DEFAULT_PROFILE
    aimo3 = args.profile == "aimo3"
    args.pool = args.pool or ("syn-aimo3-real" if aimo3 else "skythought_aime24")
    tune_hw = "h100-gpt-oss-120b" if aimo3 else "l4x4-7b-awq,l4x4-14b-awq"
    args.hardware = args.hardware or (tune_hw if args.tune is not None else tune_hw.split(",")[0])
    args.policies = args.policies or ("ours,aimo3_baseline,equal,linspace" if aimo3 else "ours,second_place,linspace,equal")
    for hw in (h.strip() for h in args.hardware.split(",")) if args.tune is not None else [args.hardware]:
        if hw not in SPEED_PRESETS:
            raise ValueError(f"unknown hardware {hw!r}; choose one of {sorted(SPEED_PRESETS)}")


def _ours_params(args: argparse.Namespace) -> dict:
    """ours' calibration: the --config's, else the profile's stack's."""
    if args.config is not None:
        resolved = SubmissionConfig.from_yaml(args.config).resolve()
        return dict(resolved.policy_params) if resolved.policy == "ours" else {}
    return dict(STACKS[stack_of(args.profile)].policy_params)


def _calibrate(args: argparse.Namespace) -> int:
    """``--tune --pool LOG``: measure what finishing first says on the pool, check it on held-out problems,
    write the config."""
    start = time.perf_counter()
    pool = load_pool_arg(args.pool, args.profile, args.seed, columns=args.columns)
    hardware = args.hardware.split(",")[0].strip()
    print(f"calibrating ours on {args.pool} ({len(pool)} problems), hardware {hardware}, profile {args.profile}, "
          f"{args.tune_runs} competitions per fold", flush=True)
    prior = STACKS[stack_of(args.profile)].policy_params.get("finish_signal")
    cal = calibrate(pool, name=args.pool, profile=args.profile, hardware=hardware, prior=prior, runs=args.tune_runs,
                    seed=args.seed, progress=lambda m: print(m, flush=True))
    if cal.measured is None or cal.finish_signal is None:
        raise ValueError(f"{args.pool}: no problem with a gold answer and two attempts: nothing to calibrate on")
    mean, se, n = cal.measured
    used = "measured" if cal.finish_signal == mean else f"the {stack_of(args.profile)} prior (within 2 SE of it)"
    ours = make_policy("ours", cal.params())
    print(f"first attempt to finish minus a random one, right: {mean:+.3f} ± {1.96 * se:.3f} on {n} problems "
          f"(prior {prior:+.2f}); written: {cal.finish_signal:+.3f}, {used} -> ours: quorum "
          f"{'on' if ours.uses_quorum() else 'off'}, ties to the {ours.tie()} finisher's answer")  # type: ignore[attr-defined]
    print(f"{'held-out fold':<15}{'signal (other fold)':>20}{'ours calibrated':>17}{'uncalibrated':>14}{'best baseline':>27}")
    for f in cal.folds:
        print(f"{f['fold']:<15}{f['signal_from_other_fold']:>+20.3f}{f['ours_calibrated']:>17.2f}"
              f"{f['ours_uncalibrated']:>14.2f}{f['best_baseline']:>18} {f['best_baseline_score']:.2f}")
    args.out_config.parent.mkdir(parents=True, exist_ok=True)
    args.out_config.write_text(f"# kit simulate --tune --pool {args.pool} --profile {args.profile} "
                               f"(python -m kit dryrun --config THIS; a build config's submission: section)\n"
                               + yaml.safe_dump(cal.config(), sort_keys=False))
    print(f"config: {args.out_config}   ({time.perf_counter() - start:.0f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"pool": cal.pool, "finish_signal": cal.finish_signal, "folds": cal.folds,
                                         "config": cal.config()}, indent=2))
    return 0


def _tune(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    policy = args.tune or "ours"
    names = list(family(args.profile)) if args.pools == "family" else [n.strip() for n in args.pools.split(",")
                                                                          if n.strip()]
    pools = {n: load_pool_arg(n, args.profile, args.seed, columns=args.columns) for n in names}
    hardware = [h.strip() for h in args.hardware.split(",")]
    prior = STACKS[stack_of(args.profile)].policy_params.get("finish_signal")
    base = {n: {"finish_signal": calibrated_signal([(p.gold, p.samples) for p in pool], prior)}
            for n, pool in pools.items()} if policy == "ours" else {}
    print(f"tuning {policy} on {len(pools)} pools x {len(hardware)} hardware, {args.tune_runs} competitions per "
          f"point and cell, profile {args.profile}" + (" (ours calibrated on each pool)" if base else ""), flush=True)
    result = tune(policy, pools, hardware, runs=args.tune_runs, profile=args.profile, seed=args.seed,
                  progress=lambda m: print(m, flush=True), base=base)
    print(f"chosen on all pools: {dict(result.chosen)}   (defaults {dict(result.default)})")
    print(f"{'pool':<20}{'default':>9}{'in-sample':>11}{'held-out':>10}  held-out parameters")
    rows = result.rows()
    for r in rows:
        print(f"{r['pool']:<20}{r['default']:>9.2f}{r['in_sample']:>11.2f}{r['held_out']:>10.2f}  {r['held_out_params']}")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"policy": policy, "chosen": dict(result.chosen),
                                         "default": dict(result.default), "rows": rows}, indent=2))
        print(f"json: {args.json}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    explicit_pool = args.pool is not None
    _simulate_defaults(args)
    if args.tune is not None:
        return _calibrate(args) if explicit_pool and args.tune in ("", "ours") else _tune(args)
    if args.runs < 2:
        raise ValueError(f"--runs must be >= 2 for a confidence interval, got {args.runs}")
    start = time.perf_counter()
    pool = load_pool_arg(args.pool, args.profile, args.seed, columns=args.columns)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    ours = _ours_params(args)
    extra = []
    if args.difficulty is not None:
        if not all(p.text for p in pool):
            raise ValueError(f"--difficulty needs problem texts; the pool {args.pool} has none (use a trace pool "
                             "or records)")
        hook = DifficultyPredictor.load(args.difficulty).hook()  # loaded once, cached per problem text
        extra.append(lambda: make_policy("ours", ours, difficulty=hook, name="ours+difficulty"))
    reports = compare(pool, names, runs=args.runs, seed=args.seed, profile=args.profile,
                      speed=SPEED_PRESETS[args.hardware], n_problems=args.problems,
                      startup_seconds=args.startup, extra=extra, max_num_seqs=hardware_max_seqs(args.hardware),
                      params={"ours": ours})
    print(f"pool {args.pool} ({len(pool)} problems), {args.runs} competitions x {args.problems} problems, "
          f"hardware {args.hardware}, start-up {args.startup:.0f} s, profile {args.profile}, ours {ours or 'uncalibrated'}")
    twice = reports[0].penalized_score is not None
    print(f"{'policy':<18}{'score':>8}{'95% CI':>18}{'mean s':>9}{'p99 s':>9}{'overruns':>10}{'of oracle':>11}"
          + ("   penalized (sd)" if twice else ""))
    for r in reports:
        seconds = "" if r.mean_seconds != r.mean_seconds else f"{r.mean_seconds:>9.0f}{r.p99_seconds:>9.0f}"
        print(f"{r.policy:<18}{r.expected_score:>8.2f}   [{r.ci_low:6.2f}, {r.ci_high:6.2f}]"
              f"{seconds or ' ' * 18}{r.overruns:>10}{r.oracle_fraction:>11.3f}"
              + (f"   {r.penalized_score:6.2f} ({r.penalized_std:.2f})" if r.penalized_score is not None else ""))
    plot(reports, args.plot, f"{args.pool}: seconds per problem ({args.hardware})")
    print(f"plot: {args.plot}   ({time.perf_counter() - start:.1f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.row() for r in reports], indent=2))
        print(f"json: {args.json}")
    return 0


def _int_list(text: str) -> list[int]:
    """'1k,2k,4000' -> [1000, 2000, 4000] (k = 1000)."""
    out = []
    for part in text.split(","):
        t = part.strip().lower()
        if not t:
            continue
        try:
            value = int(float(t[:-1]) * 1000) if t.endswith("k") else int(t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of integers: {text!r} (use e.g. 1k,2k,4000)") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"values must be >= 1: {text!r}")
        out.append(value)
    if not out:
        raise argparse.ArgumentTypeError(f"empty list: {text!r}")
    return out


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics, budget curve, answer selection and plots from recorded runs",
        description=(
            "Evaluate recorded samples without re-generating: run records (--records) and trace pools "
            "(--pool), side by side. Per problem and overall pass@1, unbiased pass@k, exact maj@k, selected-"
            "answer accuracy, tokens, seconds, no-answer share, code calls; the budget curve (each sample cut "
            "at B tokens with the tokenizer, answer re-extracted); the answer-selection strategy table. Writes "
            "report.md with PNG plots to --out, and everything as JSON to --json. See docs/evaluation.md."
        ),
    )
    p.add_argument("--records", action="append", type=Path, default=[], metavar="PATH",
                   help="a run's records.jsonl (repeatable)")
    p.add_argument("--pool", action="append", default=[], metavar="NAME|PATH",
                   help="trace pool: skythought_aime24, nemoskills, tora_gsm8k, or a trace folder/file; or another "
                        "harness's attempt log: a Harmony token log (.jsonl) or an attempt table (.csv/.parquet) "
                        "(repeatable)")
    p.add_argument("--map", dest="columns", type=parse_column_map, default=None, metavar="OLD=NEW[,...]",
                   help="rename an attempt log's columns on the way in, e.g. ground_truth=gold,total_tokens=tokens")
    p.add_argument("--run", nargs="?", const="", default=None, metavar="DRYRUN_ARGS",
                   help="first run the solver with `python -m kit dryrun` and these arguments (quoted, e.g. "
                        "--run \"--engine replay --limit 5\", or --run=--verbose for a single option; alone: "
                        "the default dry-run), then evaluate its records")
    p.add_argument("--tokenizer", default=None, metavar="approx|tiny|PATH",
                   help="tokenizer for the budget curve (default: the run's own model for records, approx for pools)")
    p.add_argument("--profile", default=None, choices=sorted(PROFILES),
                   help=f"competition profile for pools (records use their run's; default: {DEFAULT_PROFILE}, aimo3 "
                        "for attempt logs)")
    p.add_argument("--budgets", type=_int_list, default=None, metavar="LIST",
                   help="token budgets of the budget curve (default: 1k,2k,4k,6k,8k,12k,16k,24k,32k)")
    p.add_argument("--k", dest="ks", type=_int_list, default=None, metavar="LIST",
                   help="k values of pass@k and maj@k (default: 1,2,4,... up to the most samples per problem)")
    p.add_argument("--scorer", type=Path, default=None, metavar="PATH",
                   help="a trained scorer folder (python -m training.scorer): adds its row to the strategy table")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples for the strategy CIs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: runs/eval-<time>)")
    p.add_argument("--json", type=Path, default=None, help="write metrics, per-problem rows, curve and strategies here")


def _dryrun(args: argparse.Namespace) -> int:
    resolved = dryrun_config(args)
    problems, source = _dryrun_problems(args, resolved.config)
    opts = DryRunOptions(run=resolved, problems=problems, problem_source=source, order_seed=args.order_seed,
                         shuffle=not args.no_shuffle, limit=args.limit, verbose=args.verbose)
    factory = engine_factory(resolved) if resolved.config.engine == "replay" else None
    summary = run_dryrun(opts, engine_factory=factory)
    return 0 if summary.problems else 1


def _evaluate(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 150)
    if args.boot < 1:
        raise ValueError(f"--boot must be >= 1, got {args.boot}")
    out = args.out or Path("runs") / time.strftime("eval-%Y%m%d-%H%M%S")
    records = list(args.records)
    if args.run is not None:
        dry = build_parser().parse_args(["dryrun", *shlex.split(args.run)])
        if dry.out is None:
            dry.out = out / "dryrun"
        if _dryrun(dry) != 0:
            raise ValueError(f"the dry-run ({args.run or 'defaults'}) answered no problem: nothing to evaluate")
        records.append(dry.out / "records.jsonl")
    start = time.perf_counter()
    runs = load_runs(records, args.pool, tokenizer=args.tokenizer, profile=args.profile, console=console,
                     columns=args.columns)
    scorer = Scorer.load(args.scorer) if args.scorer is not None else None
    ev = evaluate(runs, ks=args.ks, budgets=args.budgets or DEFAULT_BUDGETS, n_boot=args.boot, seed=args.seed,
                  scorer=scorer, console=console)
    ev.seconds = time.perf_counter() - start
    files = write_report(ev, out)
    print_summary(ev, console)
    console.print(f"report: {files['report']}  plots: {', '.join(f.name for k, f in files.items() if k != 'report')}"
                  f"   ({time.perf_counter() - start:.1f} s)")
    if args.json is not None:
        console.print(f"json: {write_json(ev, args.json)}")
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a model's attempts at every problem of a set, at the engine's full batch",
        description=(
            "Every problem x N samples through the solver's own path (both protocols, tool calls in the sandbox, "
            "the same answer reading and sampling seeds), all in flight up to the engine's capacity: no time "
            "bank, no early stop. Records go to OUT in the run format (kit evaluate --records OUT, kit simulate "
            "--pool OUT, training.curate). A re-run with the same --out skips what is recorded. "
            "Without --model, the built-in tiny model (docs/generate.md)."
        ),
    )
    p.add_argument("--problems", default=None,
                   help="problem CSV/jsonl or bundled set (default: the profile's reference set)")
    p.add_argument("--samples", type=int, required=True, help="samples per problem")
    p.add_argument("--out", type=Path, required=True, help="the output folder (resumable)")
    p.add_argument("--config", type=Path, default=None, help="YAML: a build config's 'submission:' section or its fields")
    p.add_argument("--stack", default=None, choices=sorted(STACKS), help="r1 (default) or gpt-oss")
    p.add_argument("--model", default=None, help="model folder for vLLM (default: built-in tiny model)")
    p.add_argument("--preset", default=None, help="vLLM engine preset (default: the stack's)")
    p.add_argument("--engine", default=None, choices=["vllm", "replay"], help="generation backend (default: vllm)")
    p.add_argument("--traces", default=None, help="replay engine: the recorded samples to play")
    p.add_argument("--profile", default=None, choices=sorted(PROFILES), help="competition profile (answer range)")
    p.add_argument("--max-tokens", type=int, default=None, help="generated tokens per sample")
    p.add_argument("--seed", type=int, default=None, help="the solver's sampling seed")
    p.add_argument("--shards", type=int, default=1, help="split the work into K shares (one per job)")
    p.add_argument("--shard", type=int, default=0, help="which share this job generates (0..K-1)")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: its address (default 'auto'; 'local' starts one here)")
    p.add_argument("--replicas", type=int, default=None, help="Ray: engine replicas (default: 2 on CPU, else GPUs/TP)")
    p.add_argument("--verbose", action="store_true", help="show vLLM's own INFO logs")


def _generate(args: argparse.Namespace) -> int:
    cfg = SubmissionConfig.from_yaml(args.config) if args.config is not None else SubmissionConfig()
    cfg = cfg.with_overrides(profile=args.profile, stack=args.stack, model=args.model, preset=args.preset,
                             engine=args.engine, traces=args.traces, records_dir=str(args.out))
    if cfg.model is not None and not Path(cfg.model).exists():
        raise FileNotFoundError(f"--model {cfg.model}: no such model folder")
    changes = {k: v for k, v in (("max_tokens", args.max_tokens), ("seed", args.seed)) if v is not None}
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    resolved = cfg.resolve().with_solver(n_samples=args.samples, **changes)
    problems, source = _dryrun_problems(args, resolved.config)
    opts = GenerateOptions(run=resolved, problems=problems, problem_source=source, samples=args.samples,
                           out=args.out, shards=args.shards, shard=args.shard, ray=args.ray, replicas=args.replicas)
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    report = run_generate_ray(opts) if opts.ray is not None else run_generate(opts)
    print(f"generated {report.generated} samples in {report.seconds:.1f} s ({report.samples_per_second:.2f} "
          f"samples/s, {report.tokens_per_second:,.0f} tokens/s); {report.skipped} were recorded before")
    print(f"records: {args.out / 'records.jsonl'}: {report.merged_samples} samples, {report.merged_problems} "
          f"problems complete" + (f", {len(report.missing)} not yet (other shards or a cut run)"
                                  if report.missing else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kit", description="aimo-kit command line")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dryrun(sub)
    _add_simulate(sub)
    _add_evaluate(sub)
    _add_generate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "dryrun":
            return _dryrun(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "generate":
            return _generate(args)
    except KnownError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1
