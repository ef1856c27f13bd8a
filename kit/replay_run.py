"""Replay recorded samples through the answer pipeline: extract → normalise → vote → early stop.

This is what ``python -m kit dryrun`` runs until the solver drives a real engine (issue 4): the same
answer and voting code the submission uses, on real recorded model text, with per-problem lines, a
summary, and records written as they happen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kit.answers import extract_answer
from kit.competition import Profile, get_profile
from kit.traces import RecordedSample, load_pool
from kit.voting import StopRules, Vote, decided, majority


@dataclass
class ProblemResult:
    problem_id: str
    answer: int
    gold: int | None
    correct: bool
    samples_used: int
    samples_total: int
    abstentions: int
    stop_reason: str
    majority_all: int | None
    """The vote over every sample, for comparison with the early-stopped answer."""


def replay_problem(
    samples: Sequence[RecordedSample], profile: Profile, rules: StopRules | None
) -> tuple[ProblemResult, list[dict]]:
    """Vote over ``samples`` in order, stopping when ``rules`` say so (never when ``rules`` is None)."""
    votes: list[Vote] = []
    events: list[dict] = []
    decision_reason = "all finished"
    for i, s in enumerate(samples):
        raw = extract_answer(s.text)
        value = profile.to_answer(raw)
        votes.append(Vote(value, order=i, tokens=len(s.text)))
        events.append({"problem_id": s.problem_id, "sample": i, "source": s.source, "extracted": raw,
                       "answer": value})
        if rules is not None:
            d = decided(votes, running=len(samples) - i - 1, rules=rules)
            if d.stop:
                decision_reason = d.reason
                break
    chosen = majority(votes)
    gold = profile.to_answer(samples[0].gold)
    all_votes = [Vote(profile.to_answer(extract_answer(s.text)), order=i) for i, s in enumerate(samples)]
    answer = chosen if chosen is not None else profile.fallback_answer
    result = ProblemResult(
        problem_id=samples[0].problem_id,
        answer=answer,
        gold=gold,
        correct=gold is not None and answer == gold,
        samples_used=len(votes),
        samples_total=len(samples),
        abstentions=sum(v.answer is None for v in votes),
        stop_reason=decision_reason if chosen is not None else "no answer: fallback",
        majority_all=majority(all_votes),
    )
    return result, events


def run_replay(
    pool: str | Path,
    *,
    profile: str | Profile = "aimo2",
    out_dir: Path | None = None,
    early_stop: bool = True,
    console: Console | None = None,
) -> dict:
    """Replay every problem of a trace pool; print lines and a summary; write records and summary."""
    console = console or Console()
    prof = get_profile(profile)
    samples = load_pool(pool)
    by_problem: dict[str, list[RecordedSample]] = {}
    for s in samples:
        by_problem.setdefault(s.problem_id, []).append(s)
    out_dir = out_dir or Path("runs") / time.strftime("dryrun-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    rules = StopRules() if early_stop else None
    console.print(
        f"[bold]aimo-kit dry-run (replay)[/]: {len(by_problem)} problems, {len(samples)} recorded samples "
        f"from {pool!s}, profile {prof.name}; no model is run — issue 4 adds the live solver."
    )
    start = time.perf_counter()
    results: list[ProblemResult] = []
    with (out_dir / "records.jsonl").open("w", encoding="utf-8") as records:
        for pid, group in by_problem.items():
            result, events = replay_problem(group, prof, rules)
            for event in events:
                records.write(json.dumps(event) + "\n")
            records.write(json.dumps({"problem_id": pid, "result": asdict(result)}) + "\n")
            records.flush()
            results.append(result)
            mark = "[green]✓[/]" if result.correct else "[red]✗[/]"
            console.print(
                f"{mark} {pid:>8}  answer {result.answer:>5}  gold {result.gold!s:>5}  "
                f"samples {result.samples_used:>2}/{result.samples_total:<2}  {result.stop_reason}"
            )
    seconds = time.perf_counter() - start
    correct = sum(r.correct for r in results)
    correct_all = sum(r.majority_all is not None and r.majority_all == r.gold for r in results)
    used = sum(r.samples_used for r in results)
    total = sum(r.samples_total for r in results)
    summary = {
        "mode": "replay",
        "pool": str(pool),
        "profile": prof.name,
        "problems": len(results),
        "answered": sum(r.stop_reason != "no answer: fallback" for r in results),
        "correct": correct,
        "score": correct / len(results) if results else 0.0,
        "correct_without_early_stop": correct_all,
        "samples_used": used,
        "samples_total": total,
        "seconds": round(seconds, 3),
        "rows": [asdict(r) for r in results],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table(title="dry-run summary")
    for col in ("problems", "correct", "score", "maj@all correct", "samples used", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(str(len(results)), str(correct), f"{summary['score']:.3f}", str(correct_all),
                  f"{used}/{total}", f"{seconds:.2f}")
    console.print(table)
    console.print(f"records: {out_dir / 'records.jsonl'}  summary: {out_dir / 'summary.json'}")
    return summary
