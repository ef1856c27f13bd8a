"""``kit generate``: a model's attempts at scale — every problem × N samples, at the engine's full batch.

The dry-run solves one problem at a time under the time bank, as Kaggle does, so the engine never runs
full. Generation drops the bank and the early stop and keeps everything else of the solving path: each
(problem, sample) is a :meth:`~kit.runtime.solver.Solver.solve` of one sample numbered ``index`` (the same
prompt of the mix, the same sampling seed, both protocols, tool calls in the sandbox, the same answer
reading), and all of them are in flight up to the engine's ``max_num_seqs``.

The output folder (docs/generate.md):

* ``generate.json`` — what was asked (problem set, samples, the resolved configuration). A re-run with
  another configuration refuses the folder: the records must all come from one setting.
* ``parts/records-<writer>.jsonl`` — each writer's own records, written as samples finish (a writer is this
  process, a shard ``--shards K --shard I``, or a Ray replica). A killed run loses only the samples in
  flight; a re-run skips every (problem, sample) already recorded as finished.
* ``records.jsonl`` — the merged run, rewritten at the end of every writer's run: one ``run_start``, each
  (problem, sample) exactly once, and a ``problem`` event for each problem whose samples are all there (its
  answer the samples' majority, its gold from the problem set). This is the run format the offline layer's
  one reader reads (:func:`kit.offline.runs.load_records_run`): ``kit evaluate --records DIR``, ``kit
  simulate --pool DIR``, ``training.curate``, the scorer and the difficulty targets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kit.offline.runs import read_events
from kit.runtime.engines.base import Engine, engine_label
from kit.runtime.problems import Problem
from kit.runtime.records import RunRecorder
from kit.runtime.run_config import ResolvedConfig
from kit.runtime.session import jsonable, start_vllm
from kit.runtime.solver import Solver, sandbox_for
from kit.runtime.tiny_engines import tiny_engine_factory
from kit.runtime.voting import Vote, majority
from kit.sim.replay import engine_factory as replay_engine_factory

GENERATE_FILE = "generate.json"
PARTS = "parts"
MERGED = "records.jsonl"
UNFINISHED = ("cancelled",)
"""Sample finish reasons that do not count as recorded: the sample was cut by the run's end (a kill, a
preemption), so a re-run generates it again."""


class GenerateError(ValueError):
    """Bad input to ``kit generate`` (one line naming what is wrong)."""


@dataclass(frozen=True)
class Item:
    """One (problem, sample index) of the work."""

    problem: Problem
    index: int

    @property
    def key(self) -> tuple[str, int]:
        return self.problem.id, self.index


@dataclass
class GenerateReport:
    out: Path
    items: int
    """Items of this writer's share (shard) of the work."""
    skipped: int
    """Of those, already recorded by an earlier run."""
    generated: int = 0
    tokens: int = 0
    seconds: float = 0.0
    """Generating (the engine's start-up not counted: ``startup_seconds``)."""
    startup_seconds: float = 0.0
    merged_samples: int = 0
    merged_tokens: int = 0
    merged_problems: int = 0
    missing: list[str] = field(default_factory=list)
    """Problems whose samples are not all recorded yet (other shards, a run cut short)."""

    @property
    def samples_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def spec_of(resolved: ResolvedConfig, problems: str, samples: int) -> dict[str, Any]:
    """What ``generate.json`` holds: the work and every resolved setting that shapes a sample (not where the
    records go)."""
    record = jsonable(resolved.record())
    record["config"] = {k: v for k, v in record["config"].items() if k != "records_dir"}
    return {"problems": problems, "samples": samples, "run": record}


def claim_folder(out: Path, spec: dict[str, Any]) -> None:
    """Write ``generate.json``, or check that the folder was generated with the same ``spec``."""
    path = out / GENERATE_FILE
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise GenerateError(f"{path}: not JSON ({exc}); remove it or choose another --out") from None
        if earlier != spec:
            diff = _differences(earlier, spec)
            raise GenerateError(f"{out} holds attempts generated with another configuration ({diff}): use another "
                                "--out, or the same options")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _differences(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        parts = [_differences(a.get(k), b.get(k), f"{prefix}{k}.") for k in sorted(set(a) | set(b))
                 if a.get(k) != b.get(k)]
        return ", ".join(p for p in parts if p)[:300]
    return f"{prefix[:-1]}: {a!r:.40} then, {b!r:.40} now"


def work_items(problems: Sequence[Problem], samples: int, *, shards: int = 1, shard: int = 0) -> list[Item]:
    """Every (problem, sample) in problem order, the ``shard``-th of ``shards`` equal shares (round robin over
    the items, so each share has every problem's kind of work)."""
    if samples < 1:
        raise GenerateError(f"--samples must be >= 1, got {samples}")
    if shards < 1 or not 0 <= shard < shards:
        raise GenerateError(f"--shard must be in 0..{shards - 1} for --shards {shards}, got {shard}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise GenerateError(f"the problem set has the id {dup!r} more than once: its samples could not be told apart")
    every = [Item(p, j) for p in problems for j in range(samples)]
    return every[shard::shards]


def part_files(out: Path) -> list[Path]:
    return sorted((out / PARTS).glob("records-*.jsonl")) if (out / PARTS).is_dir() else []


def _read_parts(out: Path) -> tuple[list[dict], dict[tuple[str, int], dict]]:
    """(the parts' ``run_start`` events, their finished sample events one per (problem, sample), the last
    written winning), each part read once."""
    starts: list[dict] = []
    done: dict[tuple[str, int], dict] = {}
    for path in part_files(out):
        for e in read_events(path):
            if e.get("event") == "run_start":
                starts.append(e)
            elif e.get("event") == "sample" and e.get("finish_reason") not in UNFINISHED:
                done[(str(e["problem_id"]), int(e["index"]))] = e
    return starts, done


def recorded(out: Path) -> dict[tuple[str, int], dict]:
    """The finished sample events of every part, one per (problem, sample)."""
    return _read_parts(out)[1]


class _SamplesOnly:
    """The solver's recorder for generation: its sample events go to the part file; its per-call problem
    events do not (one solve is one sample here; the merge writes each problem's event once)."""

    def __init__(self, recorder: RunRecorder, on_sample: Callable[[dict], None]) -> None:
        self.recorder = recorder
        self.on_sample = on_sample

    def write(self, event: str, **fields: Any) -> None:
        if event == "sample":
            self.recorder.write(event, **fields)
            self.on_sample(fields)


NextItem = Callable[[], Awaitable["Item | None"]]
"""Where a worker gets its next item (None: no more work): a local list, or a Ray cluster's shared queue."""


def from_list(items: Iterable[Item]) -> NextItem:
    pending = list(items)
    pending.reverse()

    async def next_item() -> Item | None:
        return pending.pop() if pending else None
    return next_item


def open_solver(resolved: ResolvedConfig, engine: Engine, recorder: RunRecorder,
                on_sample: Callable[[dict], None] = lambda s: None) -> Solver:
    """The solver generation runs: the run's own, without early stop, its sandbox started (part of the
    start-up, like the engine's; the caller shuts ``solver.sandbox`` down)."""
    config = replace(resolved.solver, early_stop=False, n_samples=max(resolved.solver.n_samples, 1))
    return Solver(engine, config, profile=resolved.profile, sandbox=sandbox_for(config),
                  recorder=_SamplesOnly(recorder, on_sample))  # type: ignore[arg-type]


async def generate_items(solver: Solver, next_item: NextItem, *, concurrency: int | None = None) -> None:
    """Solve items as one sample each until ``next_item`` has none: ``concurrency`` workers (default: the
    engine's ``max_num_seqs``) each pull the next item when theirs is done, so the engine's batch stays full
    and a fast worker takes more. No deadline, no early stop."""

    async def worker() -> None:
        while (item := await next_item()) is not None:
            await solver.solve(item.problem.id, item.problem.problem, n_samples=1, first_index=item.index)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency or solver.engine.max_num_seqs))))


def merge(out: Path, problems: Sequence[Problem], samples: int, resolved: ResolvedConfig,
          report: GenerateReport) -> None:
    """Rewrite ``records.jsonl`` from the parts (see the module docstring); atomic (a reader never sees half).
    ``report`` gets what the merged run holds."""
    starts, done = _read_parts(out)
    profile = resolved.profile
    report.merged_samples, report.merged_problems, report.missing = 0, 0, []
    lines: list[dict] = []
    if starts:
        lines.append(starts[0])
    for p in problems:
        got = [done[(p.id, j)] for j in range(samples) if (p.id, j) in done]
        lines.extend(got)
        report.merged_samples += len(got)
        report.merged_tokens += sum(int(x.get("tokens") or 0) for x in got)
        if len(got) < samples:
            report.missing.append(p.id)
            continue
        votes = [Vote(s["answer"], order=k) for k, s in enumerate(got) if s.get("answer") is not None]
        answer = majority(votes) if votes else None
        gold = profile.to_answer(p.answer) if p.answer is not None else None
        lines.append({"event": "problem", "version": starts[0]["version"] if starts else got[0]["version"],
                      "time": time.time(), "problem_id": p.id, "problem": p.problem,
                      "answer": answer if answer is not None else profile.fallback_answer,
                      "gold": gold, "correct": None if gold is None else answer == gold,
                      "reason": "generated" if answer is not None else "generated; no answer: fallback",
                      "tokens": sum(int(s.get("tokens") or 0) for s in got),
                      "seconds": round(sum(float(s.get("seconds") or 0.0) for s in got), 3),
                      "samples": samples})
        report.merged_problems += 1
    tmp = out / (MERGED + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, out / MERGED)


def run_start_fields(resolved: ResolvedConfig, engine: Engine, spec: dict[str, Any], writer: str) -> dict[str, Any]:
    return {**jsonable(resolved.record()), "model": engine_label(engine), "engine": resolved.config.engine,
            "generate": {"problems": spec["problems"], "samples": spec["samples"], "writer": writer},
            "max_num_seqs": engine.max_num_seqs}


@dataclass
class GenerateOptions:
    run: ResolvedConfig
    """The run configuration, resolved (its solver's ``max_tokens`` and ``seed`` are the samples')."""
    problems: list[Problem]
    problem_source: str
    samples: int
    out: Path
    shards: int = 1
    shard: int = 0
    ray: str | None = None
    """A Ray cluster's address (``auto``, ``ray://host:10001``, ``local`` for a cluster started here), or None."""
    replicas: int | None = None
    """Ray: engine replicas (default: as many as the cluster's GPUs allow, or 2 on CPU)."""

    @property
    def writer(self) -> str:
        return "local" if self.shards == 1 else f"shard{self.shard}of{self.shards}"


def prepare(opts: GenerateOptions) -> tuple[list[Item], list[Item]]:
    """Check the folder against the configuration (claiming it when new); (this writer's items, those of them
    still to generate)."""
    items = work_items(opts.problems, opts.samples, shards=opts.shards, shard=opts.shard)  # bad input: nothing written
    claim_folder(opts.out, spec_of(opts.run, opts.problem_source, opts.samples))
    done = recorded(opts.out)
    return items, [i for i in items if i.key not in done]


def run_generate(opts: GenerateOptions, *, engine_factory: Callable[[], Any] | None = None,
                 console: Console | None = None) -> GenerateReport:
    """Generate this writer's missing items on one engine (this process), then merge; see the module docstring.
    ``engine_factory``: an engine other than vLLM on the configured model (replay, the tiny model)."""
    console = console or Console()
    items, todo = prepare(opts)
    report = GenerateReport(out=opts.out, items=len(items), skipped=len(items) - len(todo))
    if todo:
        console.print(f"[bold]kit generate[/]: {len(todo)} samples to generate ({report.skipped} of {len(items)} "
                      f"already recorded in {opts.out})")
        run_to_end(_generate_here(opts, todo, report, engine_factory, console))
    else:
        console.print(f"kit generate: all {len(items)} samples already recorded in {opts.out}")
    merge(opts.out, opts.problems, opts.samples, opts.run, report)
    return report


def run_to_end(coro: Any) -> Any:
    """``asyncio.run(coro)``, also from inside a running event loop (a Jupyter kernel): there in a thread of its
    own, since vLLM's async engine needs a loop for its whole life."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def default_engine_factory(run: ResolvedConfig) -> Callable[[], Any] | None:
    """The engine a run names when it is not vLLM on a given model: the replay engine on its recorded samples,
    or the built-in tiny model (None: vLLM on the configured model)."""
    if run.config.engine == "replay":
        return replay_engine_factory(run)
    if run.tiny:
        return tiny_engine_factory(run)
    return None


async def start_engine(run: ResolvedConfig, engine_factory: Callable[[], Any] | None, log: Callable[[str], None]
                       ) -> Engine:
    """The engine of ``run``: the factory's, else vLLM on the configured model."""
    engine_factory = engine_factory or default_engine_factory(run)
    if engine_factory is None:
        return await start_vllm(run, log=log)
    made = engine_factory()
    return await made if inspect.isawaitable(made) else made


async def _generate_here(opts: GenerateOptions, todo: list[Item], report: GenerateReport,
                         engine_factory: Callable[[], Any] | None, console: Console) -> None:
    t0 = time.monotonic()
    engine = await start_engine(opts.run, engine_factory, lambda m: console.print(f"[dim]{m}[/]"))
    spec = spec_of(opts.run, opts.problem_source, opts.samples)
    recorder = RunRecorder(opts.out / PARTS / f"records-{opts.writer}.jsonl")
    recorder.write("run_start", **run_start_fields(opts.run, engine, spec, opts.writer))
    solver = open_solver(opts.run, engine, recorder, lambda sample: advance(sample))
    report.startup_seconds = time.monotonic() - t0
    progress = Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console)
    start = time.monotonic()

    def advance(sample: dict) -> None:
        report.generated += 1
        report.tokens += int(sample.get("tokens") or 0)
        elapsed = max(time.monotonic() - start, 1e-9)
        progress.update(task, advance=1, rate=f"{report.generated / elapsed:.2f} samples/s "
                                              f"{report.tokens / elapsed:,.0f} tok/s")

    try:
        with progress:
            task = progress.add_task("generate", total=len(todo), rate="")
            await generate_items(solver, from_list(todo))
        report.seconds = time.monotonic() - start
    finally:
        if solver.sandbox is not None:
            solver.sandbox.shutdown()
        recorder.close()
        await engine.close()


__all__ = [
    "GENERATE_FILE",
    "MERGED",
    "PARTS",
    "GenerateError",
    "GenerateOptions",
    "GenerateReport",
    "Item",
    "claim_folder",
    "default_engine_factory",
    "from_list",
    "generate_items",
    "merge",
    "open_solver",
    "part_files",
    "prepare",
    "recorded",
    "run_generate",
    "run_start_fields",
    "spec_of",
    "start_engine",
    "work_items",
]
