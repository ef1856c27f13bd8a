"""The offline run data model and its one reader: run records and recorded trace pools as :class:`Run` s.

A *run* is one set of samples per problem, from our own run records (``records.jsonl``, written by the
solver as it goes: :class:`kit.runtime.records.RunRecorder`) or from a recorded trace pool
(:mod:`kit.offline.traces`). Evaluation, answer selection, the competition simulator's pools, the scorer's
pairs and the difficulty targets all read runs through this module, so a file is validated one way and
"finished", "correct" and "tokens" mean one thing everywhere.

* :func:`read_events` — the raw events of a records file (version-checked; a killed run's partial last
  line is dropped), and :func:`samples_frame` / :func:`problems_frame`, those events as polars frames;
* :func:`load_records_run` — a records file as a :class:`Run`, validated field by field (errors name the
  file, line and field);
* :func:`load_pool_run` — a trace pool or another harness's attempt log (a Harmony token log, an attempt
  table: :mod:`kit.offline.attempt_logs`) as a :class:`Run` (answers and golds normalised for a profile);
* :func:`load_runs` — several of either, with each run's tokenizer resolved and checked.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from rich import progress

from kit.offline.attempt_logs import LoggedAttempt, is_attempt_log, read_attempt_log
from kit.offline.tokenizers import TokenSplitter, own_tokenizer, resolve_tokenizer
from kit.offline.traces import load_pool
from kit.runtime.answers import extract_answer
from kit.runtime.jsonl import json_lines
from kit.runtime.problems import load_problems
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.protocols.tir import output_blocks, output_shows_error
from kit.runtime.records import RECORD_VERSION
from kit.runtime.results import DONE_REASONS
from kit.runtime.sandbox.result import OK_STATUSES
from kit.runtime.tokens import ApproxTokenizer
from kit.runtime.voting import Vote, majority

if TYPE_CHECKING:
    from rich.console import Console

RECOUNT_TOLERANCE = (0.8, 1.25)
"""Accepted ratio (recounted / recorded tokens) when a run's own tokenizer cannot be checked directly.
The same tokenizer re-encoding decoded text lands within a few per cent for trained models; a different
vocabulary is typically 25 %+ off (the tiny test tokenizer counts 1.31x Qwen-like approx tokens)."""


# --- the events of a records file ---------------------------------------------------------------


class RecordFormatError(ValueError):
    """A records file that cannot be read as this version's run records."""


def read_events(path: str | Path, event: str | None = None) -> list[dict]:
    """All events of a records file (optionally of one type), validating the version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run records not found: {path}")
    rows = []
    for lineno, row in json_lines(path, RecordFormatError, partial_last_line=True):
        version = row.get("version")
        if version != RECORD_VERSION:
            raise RecordFormatError(
                f"{path}:{lineno}: record version {version!r}, this kit reads version {RECORD_VERSION}"
                " (records from an older run format: re-run, or convert with the matching kit version)"
            )
        if event is None or row.get("event") == event:
            rows.append(row)
    return rows


def samples_frame(path: str | Path):
    """The ``sample`` events as a polars DataFrame (one row per sample)."""

    rows = read_events(path, "sample")
    if not rows:
        return pl.DataFrame()
    for r in rows:
        r["code_calls"] = len(r.get("code", []))
        r.pop("code", None)
    return pl.DataFrame(rows, infer_schema_length=None)


def problems_frame(path: str | Path):
    """The ``problem`` events as a polars DataFrame (one row per problem)."""

    rows = read_events(path, "problem")
    for r in rows:
        r["tally"] = json.dumps(r.get("tally", {}))
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


# --- the run model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSample:
    index: int
    text: str
    tokens: int
    answer: int | None
    finish_reason: str
    seconds: float | None = None
    """From the problem's start to this sample's end (records only)."""
    finished_at: float | None = None
    """Finish time on the run's clock (records); orders First-Finish."""
    code_calls: int = 0
    code_errors: int = 0
    recorded_correct: bool | None = None
    """The recording harness's own verdict (trace pools that keep one: symbolic answers graded properly)."""
    entropy_mean: float | None = None
    """Mean token entropy over the sample (records of engines that streamed log-probabilities)."""
    entropy_tail: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason in DONE_REASONS

    @property
    def code_ok(self) -> bool | None:
        return None if self.code_calls == 0 else self.code_errors == 0


@dataclass
class EvalProblem:
    problem_id: str
    problem: str
    gold: int | None
    selected: int | None
    """The run's chosen answer (records) or the plain majority of the finished samples (pools)."""
    samples: list[EvalSample]
    tokens: int
    seconds: float | None = None
    reason: str = ""

    @property
    def done(self) -> list[EvalSample]:
        return [s for s in self.samples if s.done]

    def finish_order(self) -> list[EvalSample]:
        """Finished samples, first finisher first: by finish time (records) or by length (pools)."""
        return sorted(self.done, key=lambda s: (s.finished_at if s.finished_at is not None else s.tokens,
                                                s.tokens, s.index))


@dataclass
class Run:
    name: str
    kind: Literal["records", "pool"]
    source: str
    profile: Profile
    problems: list[EvalProblem]
    model: str | None = None
    tokenizer: TokenSplitter | None = None
    """Counts and cuts this run's tokens for the budget curve."""
    notes: list[str] = field(default_factory=list)
    recount_check: bool = False
    """The run's own tokenizer is not here: recount the recorded samples and compare (records only)."""
    recount_ratio: float | None = None
    ends: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)
    """Cached token end offsets per (problem id, sample index)."""
    logged: dict[tuple[str, int], LoggedAttempt] = field(default_factory=dict, repr=False)
    """An attempt log's attempts per (problem id, sample index): they are cut at a token budget by their own
    rules (:meth:`LoggedAttempt.answers_at`), not by re-tokenising a text."""

    @property
    def scored(self) -> list[EvalProblem]:
        return [p for p in self.problems if p.gold is not None]


def answer_of(text: str, profile: Profile, cache: dict[str, int | None]) -> int | None:
    """The profile's integer answer of a text; normalisation cached by the extracted string (sympy is slow)."""
    raw = extract_answer(text)
    if raw is None:
        return None
    if raw not in cache:
        cache[raw] = profile.to_answer(raw)
    return cache[raw]


def track(items: Sequence, description: str, console: Console | None) -> Iterable:
    if console is None or not console.is_terminal:  # a bar in a log file is only noise
        return items

    return progress.track(items, description=description, console=console, transient=True)


def _record_lines(path: Path) -> list[int]:
    """Line numbers of the non-blank lines (= the events of :func:`read_events`, in order)."""
    with path.open(encoding="utf-8") as fh:
        return [n for n, line in enumerate(fh, 1) if line.strip()]


def _check(event: dict, name: str, types: tuple[type, ...], where: Callable[[], str], *,
           optional: bool = False) -> Any:
    if name not in event or event[name] is None:
        if optional:
            return None
        raise RecordFormatError(f"{where()}: {event.get('event')} event has no {name!r} field")
    value = event[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join(t.__name__ for t in types)
        raise RecordFormatError(f"{where()}: field {name!r} must be {expected}, got {value!r:.60}")
    return value


def _problem_texts(start: Mapping[str, Any], problem_events: Sequence[dict]) -> dict[str, str]:
    """Problem texts for a records run: from the problem events if recorded, else from the run's inputs
    (the problem set or replay trace pool named in ``run_start``); empty when neither can be found."""
    texts = {str(e["problem_id"]): e["problem"] for e in problem_events if isinstance(e.get("problem"), str)}
    if texts:
        return texts
    options = start.get("options") or {}
    problems = options.get("problems")
    try:
        if problems not in (None, "None"):
            return {p.id: p.problem for p in load_problems(problems)}
        if options.get("engine") == "replay":
            return {s.problem_id: s.problem for s in load_pool(options.get("traces") or "skythought_aime24")}
        if options:
            return {p.id: p.problem for p in load_problems(None)}
    except (FileNotFoundError, ValueError):
        pass
    return {}


def _sample_of(e: dict, where: Callable[[], str], tokenizer: TokenSplitter | None) -> tuple[str, EvalSample, bool]:
    """(problem id, sample, recounted) of one ``sample`` event, every field checked."""
    pid = str(_check(e, "problem_id", (str, int), where))
    text = _check(e, "text", (str,), where)
    tokens = _check(e, "tokens", (int,), where, optional=True)
    recounted = tokens is None
    if recounted:
        if tokenizer is None:
            raise RecordFormatError(
                f"{where()}: sample event (problem {pid}) has no 'tokens' field: token counts are needed "
                "for lengths and budgets; pass --tokenizer to recount them from the text")
        tokens = tokenizer.count(text)
    started = _check(e, "started", (int, float), where, optional=True)
    finished = _check(e, "finished", (int, float), where, optional=True)
    code = _check(e, "code", (list,), where, optional=True) or []
    statuses = [c.get("status") if isinstance(c, dict) else None for c in code]
    return pid, EvalSample(
        index=_check(e, "index", (int,), where),
        text=text,
        tokens=tokens,
        answer=_check(e, "answer", (int,), where, optional=True),
        finish_reason=_check(e, "finish_reason", (str,), where),
        seconds=None if started is None or finished is None else float(finished - started),
        finished_at=None if finished is None else float(finished),
        code_calls=len(code),
        code_errors=sum(s not in OK_STATUSES for s in statuses),
        entropy_mean=_entropy(e, "entropy_mean", where),
        entropy_tail=_entropy(e, "entropy_tail", where),
    ), recounted


def _entropy(e: dict, name: str, where: Callable[[], str]) -> float | None:
    value = _check(e, name, (int, float), where, optional=True)
    if value is not None and not value >= 0:  # NaN or negative: a broken recording, not a confidence
        raise RecordFormatError(f"{where()}: field {name!r} must be a non-negative number, got {value!r}")
    return None if value is None else float(value)


def records_file(path: str | Path) -> Path | None:
    """The run-records file ``path`` names: a ``records*.jsonl`` file, or a run's folder holding
    ``records.jsonl`` (a dry-run's ``--out``, ``kit generate``'s output); None for anything else."""
    p = Path(path)
    if p.is_dir() and (p / "records.jsonl").is_file():
        return p / "records.jsonl"
    return p if p.is_file() and p.name.startswith("records") and p.suffix == ".jsonl" else None


def load_records_run(path: str | Path, *, tokenizer: TokenSplitter | None = None, name: str | None = None,
                     texts: Mapping[str, str] | None = None) -> Run:
    """A run from a ``records.jsonl`` (see :mod:`kit.runtime.records`), validated field by field.

    Errors name the file, line and field: an older record version (:class:`RecordFormatError` from
    :func:`read_events`), a missing or mistyped field, a file holding two runs. A sample without ``tokens``
    is an error unless ``tokenizer`` is given: then its text is recounted (noted). Problem texts are the
    recorded ones (older files: the problem set their ``run_start`` names), replaced where ``texts``
    (id → text) gives one.
    """
    path = records_file(path) or Path(path)
    events = read_events(path)
    lines: list[int] = []

    def where_of(i: int) -> Callable[[], str]:
        def where() -> str:
            if not lines:
                lines.extend(_record_lines(path))
            return f"{path}:{lines[i] if i < len(lines) else '?'}"
        return where

    starts = [i for i, e in enumerate(events) if e.get("event") == "run_start"]
    if len(starts) > 1:
        at = ", ".join(where_of(i)().rsplit(":", 1)[1] for i in starts)
        raise RecordFormatError(f"{path}: holds {len(starts)} runs (run_start at lines {at}); the solver appends "
                                "to an existing records.jsonl: evaluate one run per file")
    start = events[starts[0]] if starts else {}
    notes = [] if starts else ["no run_start event: model and profile unknown (profile aimo2 assumed)"]
    samples: dict[str, list[EvalSample]] = {}
    problem_events: list[tuple[int, dict]] = []
    recounted = 0
    for i, e in enumerate(events):
        if e.get("event") == "problem":
            problem_events.append((i, e))
        elif e.get("event") == "sample":
            pid, sample, again = _sample_of(e, where_of(i), tokenizer)
            if any(s.index == sample.index for s in samples.get(pid, ())):
                raise RecordFormatError(f"{where_of(i)()}: sample {sample.index} of problem {pid} is recorded twice")
            samples.setdefault(pid, []).append(sample)
            recounted += again
    if recounted:
        notes.append(f"{recounted} samples had no token count: recounted with {tokenizer.name}")  # type: ignore[union-attr]
    known = {**_problem_texts(start, [e for _, e in problem_events]), **(texts or {})}
    golds = _dryrun_golds(events)
    last = {str(e.get("problem_id")): (i, e) for i, e in problem_events}  # a retried problem: its last answer
    if len(last) < len(problem_events):
        notes.append(f"{len(problem_events) - len(last)} problem(s) answered again after an engine restart: "
                     "the last answer counts, every attempt's samples are kept")
    problems = [_problem_of(e, where_of(i), known, samples, golds) for i, e in problem_events
                if last.get(str(e.get("problem_id")), (None,))[0] == i]
    if samples:
        notes.append(f"left out {len(samples)} problem(s) with samples but no problem event (run stopped "
                     f"mid-problem): {', '.join(sorted(samples)[:5])}")
    if not problems:
        raise RecordFormatError(f"{path}: no problem events: nothing to evaluate")
    default = path.parent.name if path.name == "records.jsonl" and path.parent.name else path.stem
    model = start.get("model") if isinstance(start.get("model"), str) else None
    return Run(name=name or default, kind="records", source=str(path), profile=get_profile(start.get("profile")),
               problems=problems, model=model, notes=notes)


def _dryrun_golds(events: Sequence[dict]) -> dict[str, int]:
    """The golds a dry-run knew (its ``dryrun`` event): ``predict`` is never told them, as on Kaggle, so its
    problem events carry none."""
    golds: dict[str, int] = {}
    for e in events:
        if e.get("event") == "dryrun" and isinstance(e.get("golds"), dict):
            golds.update({str(k): v for k, v in e["golds"].items() if isinstance(v, int) and not isinstance(v, bool)})
    return golds


def _problem_of(e: dict, where: Callable[[], str], texts: Mapping[str, str],
                samples: dict[str, list[EvalSample]], golds: Mapping[str, int]) -> EvalProblem:
    """One ``problem`` event as an :class:`EvalProblem`, taking its samples out of ``samples``; its gold is
    the event's, else the dry-run's (``golds``)."""
    pid = str(_check(e, "problem_id", (str, int), where))
    gold = _check(e, "gold", (int,), where, optional=True)
    return EvalProblem(
        problem_id=pid,
        problem=texts.get(pid, ""),
        gold=gold if gold is not None else golds.get(pid),
        selected=_check(e, "answer", (int,), where),
        samples=samples.pop(pid, []),
        tokens=_check(e, "tokens", (int,), where, optional=True) or 0,
        seconds=_check(e, "seconds", (int, float), where, optional=True),
        reason=str(e.get("reason") or "").split("\n")[0],
    )


def _code_stats(text: str) -> tuple[int, int]:
    """(executed code blocks, blocks whose output shows an error) of a recorded TIR text.

    Trace pools keep no sandbox status, so each ```` ```output ```` block is judged by
    :func:`kit.runtime.protocols.tir.output_shows_error` (a traceback or an ``...Error`` line): the same
    verdict the selection strategies see."""
    blocks = output_blocks(text)
    return len(blocks), sum(output_shows_error(b) for b in blocks)


def load_pool_run(pool: str | Path, *, profile: Profile | str | None = None,
                  tokenizer: TokenSplitter | None = None, name: str | None = None,
                  console: Console | None = None, columns: Mapping[str, str] | None = None) -> Run:
    """A run from a recorded trace pool (bundled name, folder or file; see :mod:`kit.offline.traces`) or an
    attempt log (a Harmony token log or an attempt table, with ``columns`` renamed: see
    :mod:`kit.offline.attempt_logs`).

    Samples are grouped by problem id across the pool's files (SkyThought: 11 checkpoints = 11 samples
    per problem). Answers and golds are normalised with the profile (a gold that is not an integer in
    range leaves the problem unscored); tokens are counted with ``tokenizer`` (default: approx), except in
    attempt logs, which carry their own counts.
    """
    if is_attempt_log(pool, columns):
        return logged_run(pool, profile=profile, columns=columns, name=name)
    prof = get_profile(profile)
    tok = tokenizer or ApproxTokenizer()
    recorded = load_pool(pool)
    ends: list[np.ndarray] = []
    step = 16
    batches = [recorded[i : i + step] for i in range(0, len(recorded), step)]
    for batch in track(batches, f"tokenising {pool} ({tok.name})", console):
        ends.extend(tok.ends([s.text for s in batch]))
    cache: dict[str, int | None] = {}
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(recorded):
        groups.setdefault(s.problem_id, []).append(i)
    run = Run(name=name or (pool if isinstance(pool, str) and not Path(pool).exists() else Path(pool).name),
              kind="pool", source=str(pool), profile=prof, problems=[], tokenizer=tok)
    for pid, idx in groups.items():
        samples = []
        for j, i in enumerate(idx):
            calls, errors = _code_stats(recorded[i].text)
            samples.append(EvalSample(index=j, text=recorded[i].text, tokens=len(ends[i]),
                                      answer=answer_of(recorded[i].text, prof, cache), finish_reason="stop",
                                      code_calls=calls, code_errors=errors,
                                      recorded_correct=recorded[i].recorded_correct))
            run.ends[(pid, j)] = ends[i]
        first = recorded[idx[0]]
        run.problems.append(EvalProblem(
            problem_id=pid, problem=first.problem, gold=prof.to_answer(first.gold),
            selected=majority([Vote(s.answer) for s in samples]), samples=samples,
            tokens=sum(s.tokens for s in samples)))
    unscored = len(run.problems) - len(run.scored)
    if unscored:
        run.notes.append(f"{unscored} problem(s) without an integer gold in {prof.name}'s range: unscored")
    return run


def logged_run(path: str | Path, *, profile: Profile | str | None = None, columns: Mapping[str, str] | None = None,
               name: str | None = None) -> Run:
    """An attempt log (:func:`kit.offline.attempt_logs.read_attempt_log`) as a run: attempts grouped by
    problem id in file order; a problem's selected answer is the plain majority of its finished attempts.
    Without a ``profile`` the log is read as AIMO3's (answers 0–99999, no modulus): the harnesses that write
    these formats are the AIMO3 teams'."""
    prof = get_profile(profile or "aimo3")
    path = Path(path)
    attempts = read_attempt_log(path, profile=prof, columns=columns)
    kind = "attempt table" if path.suffix in (".csv", ".parquet") else "harmony log"
    run = Run(name=name or path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(path.suffix),
              kind="pool", source=str(path), profile=prof, problems=[], model=kind)
    if profile is None:
        run.notes.append("profile aimo3 assumed for an attempt log (--profile to change)")
    groups: dict[str, list[LoggedAttempt]] = {}
    for a in attempts:
        groups.setdefault(a.problem_id, []).append(a)
    for pid, group in groups.items():
        samples = [EvalSample(index=j, text=a.text, tokens=a.tokens, answer=a.answer, finish_reason=a.finish_reason,
                              seconds=a.seconds, finished_at=a.seconds, code_calls=a.python_calls,
                              code_errors=a.python_errors, recorded_correct=a.recorded_correct,
                              entropy_mean=a.entropy_mean, entropy_tail=a.entropy_tail)
                   for j, a in enumerate(group)]
        run.logged.update({(pid, j): a for j, a in enumerate(group)})
        run.problems.append(EvalProblem(
            problem_id=pid, problem=next((a.problem for a in group if a.problem), ""), gold=group[0].gold,
            selected=majority([Vote(s.answer) for s in samples if s.done]), samples=samples,
            tokens=sum(s.tokens for s in samples)))
    unscored = len(run.problems) - len(run.scored)
    if unscored:
        run.notes.append(f"{unscored} problem(s) without an integer gold in {prof.name}'s range: unscored")
    return run


def tokenizer_for_records(run: Run, chosen: TokenSplitter | None) -> TokenSplitter:
    """The tokenizer that cuts a records run's samples, refusing one that differs from the run's own.

    Budget cuts must fall where the model's token budget would have fallen: with another vocabulary the
    curve is shifted. The run's own tokenizer is found from ``run_start``'s model (``replay:`` → approx;
    a local model folder → its tokenizer). When it is not here, ``chosen`` is used and the recorded token
    counts are recounted as a check (:func:`verify_token_counts`).
    """
    own = own_tokenizer(run.model)
    if chosen is None:
        if own is None:
            why = f"the run's model {run.model!r} is not here" if run.model else "no run_start names the model"
            raise ValueError(f"{run.source}: {why}, so its tokenizer cannot cut the budget curve; pass "
                             "--tokenizer PATH (that model's tokenizer folder) or --tokenizer approx")
        return own
    if own is not None and own.identity != chosen.identity:
        raise ValueError(
            f"{run.source}: tokenizer mismatch: the run was generated with {run.model!r} (tokenizer "
            f"{own.name}), --tokenizer {chosen.name} is a different tokenizer, so budget cuts would not fall "
            "where the model's token budget fell; leave out --tokenizer to use the run's own")
    run.recount_check = own is None
    return chosen


def token_ends(run: Run, samples: Sequence[tuple[EvalProblem, EvalSample]],
                console: Console | None) -> list[np.ndarray]:
    """Token end offsets of the samples, computed once per run (one tokenisation, every budget)."""
    if run.tokenizer is None:
        raise ValueError(f"{run.source}: no tokenizer to count and cut tokens (load runs with load_runs, or set "
                         "run.tokenizer = tokenizer_for_records(run, ...))")
    todo = [(p.problem_id, s) for p, s in samples if (p.problem_id, s.index) not in run.ends]
    step = 16
    for k in track(range(0, len(todo), step), f"tokenising {run.name} ({run.tokenizer.name})", console):
        batch = todo[k : k + step]
        for (pid, s), e in zip(batch, run.tokenizer.ends([s.text for _, s in batch]), strict=True):
            run.ends[(pid, s.index)] = e
    return [run.ends[(p.problem_id, s.index)] for p, s in samples]


def verify_token_counts(run: Run, console: Console | None = None) -> float | None:
    """Recount a records run's finished samples without code calls; the ratio recount/recorded.

    Raises when the run's own tokenizer could not be checked directly and the ratio is outside
    :data:`RECOUNT_TOLERANCE` (another tokenizer than the model's)."""
    if run.kind != "records" or run.tokenizer is None:
        return None
    pairs = [(p, s) for p in run.problems for s in p.done if s.code_calls == 0 and s.tokens > 0]
    if not pairs:
        return None
    ends = token_ends(run, pairs, console)
    ratio = sum(len(e) for e in ends) / sum(s.tokens for _, s in pairs)
    run.recount_ratio = ratio
    lo, hi = RECOUNT_TOLERANCE
    if run.recount_check and not lo <= ratio <= hi:
        raise ValueError(
            f"{run.source}: tokenizer mismatch: recounting {len(pairs)} recorded samples with "
            f"{run.tokenizer.name} gives {ratio:.2f}x the recorded token counts (accepted {lo}-{hi}); the "
            f"run was generated with {run.model!r}: pass that model's tokenizer with --tokenizer")
    return ratio



def _unique_names(runs: Sequence[Run]) -> None:
    seen: Counter[str] = Counter()
    for r in runs:
        seen[r.name] += 1
        if seen[r.name] > 1:
            r.name = f"{r.name}#{seen[r.name]}"


def load_runs(records: Sequence[str | Path] = (), pools: Sequence[str | Path] = (), *,
              tokenizer: str | Path | None = None, profile: str | None = None,
              console: Console | None = None, columns: Mapping[str, str] | None = None) -> list[Run]:
    """Load and check every input; resolve each run's tokenizer (see :func:`tokenizer_for_records`);
    ``columns`` renames the fields of attempt logs among the pools."""
    if not records and not pools:
        raise ValueError("nothing to evaluate: give --records PATH, --pool NAME|PATH or --run")
    chosen = resolve_tokenizer(tokenizer) if tokenizer is not None else None
    runs = []
    for path in records:
        run = load_records_run(path, tokenizer=chosen)
        run.tokenizer = tokenizer_for_records(run, chosen)
        runs.append(run)
    for pool in pools:
        runs.append(load_pool_run(pool, profile=profile, tokenizer=chosen, console=console, columns=columns))
    _unique_names(runs)
    return runs
