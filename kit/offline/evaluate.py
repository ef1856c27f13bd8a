"""Evaluate runs offline: accuracy estimators, budget curves, answer selection, reports with plots.

A *run* is one set of samples per problem, from our own run records (``records.jsonl``, written by the
solver) or from a recorded trace pool (:mod:`kit.offline.traces`). Everything here works on what was recorded:
nothing is re-generated, so a 5-hour run's questions (how many samples? which token budget? which vote?)
are answered in seconds. Several runs are evaluated side by side.

Metrics (definitions and citations in ``docs/evaluation.md``):

* pass@1 — per problem the share of correct samples, averaged over problems;
* pass@k — Chen et al. 2021's unbiased estimator ``1 - C(n-c, k) / C(n, k)``, in its numerically stable
  product form (:func:`pass_at_k`);
* maj@k — the probability that a majority vote over ``k`` samples drawn without replacement is right,
  computed *exactly* for any ``n`` with a generating function (:func:`maj_at_k`);
* selected accuracy — the run's own chosen answer (records) or the majority of all samples (pools);
* tokens, seconds, no-answer share, code-call statistics;
* the budget curve — each sample cut at ``B`` tokens (tokenised once, cut by character offset) and its
  answer re-extracted, giving pass@1 and maj@n as a function of the token budget (:func:`budget_curve`);
* the answer-selection table (:mod:`kit.offline.selection`) on :class:`~kit.offline.selection.Candidate` lists built here
  (:func:`selection_problems`; :func:`kit.offline.selection.problems_from_records` / ``problems_from_pool`` wrap it).

Metrics use *finished* samples only (finish reason stop/length/repetition/context, as the solver's own
vote): aborted samples were cut by early stopping, not by the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import polars as pl

from kit.runtime.answers import extract_answer
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.records import RecordFormatError, read_events
from kit.runtime.solver import DONE_REASONS
from kit.runtime.voting import Vote, majority

if TYPE_CHECKING:
    from rich.console import Console

    from kit.offline.selection import Candidate

DEFAULT_BUDGETS = (1000, 2000, 4000, 6000, 8000, 12000, 16000, 24000, 32000)
"""Token budgets of the budget curve (the 1k-32k range of AIMO-style max_tokens settings)."""
RECOUNT_TOLERANCE = (0.8, 1.25)
"""Accepted ratio (recounted / recorded tokens) when a run's own tokenizer cannot be checked directly.
The same tokenizer re-encoding decoded text lands within a few per cent for trained models; a different
vocabulary is typically 25 %+ off (the tiny test tokenizer counts 1.31x Qwen-like approx tokens)."""
CODE_OK_STATUSES = frozenset({"ok", "truncated"})
"""Sandbox statuses of a code call that ran to its end (``kit.runtime.sandbox.Status``)."""
_OUTPUT_BLOCK = re.compile(r"```output\n(.*?)```", re.DOTALL)

SelectionProblem = tuple[str, str, "int | None", "list[Candidate]"]
"""(problem id, problem text, gold, candidates): one row of :func:`kit.offline.selection.strategy_table`'s input."""

# --- estimators ------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code", eq. 1): ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (the paper's numerically stable form): the binomial
    coefficients themselves overflow floats for a few hundred samples.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _poly_mul(a: list[int], b: list[int], degree: int) -> list[int]:
    """Product of two integer polynomials (coefficient lists), truncated above ``degree``."""
    out = [0] * min(len(a) + len(b) - 1, degree + 1)
    for i, x in enumerate(a):
        if x == 0 or i > degree:
            continue
        for j, y in enumerate(b[: degree - i + 1]):
            out[i + j] += x * y
    return out


def maj_at_k(answers: Sequence[int | None], gold: int, k: int) -> float:
    """Probability that the majority vote over ``k`` of the ``answers`` (drawn without replacement) is
    ``gold``; ``None`` answers are abstentions. Exact for any number of samples.

    Votes are plain (weight 1) and ties go to the larger answer, as :func:`kit.runtime.voting.majority`'s default.
    Why exact instead of enumeration or Monte Carlo: the vote only depends on how many draws each answer
    gets, so with ``x`` draws of the gold answer it wins iff every other answer ``a`` gets at most ``x``
    draws (``x - 1`` if ``a`` would win a tie). The number of such draws is a coefficient of the product
    of the truncated generating functions ``sum_{y <= cap_a} C(m_a, y) t^y`` (times ``(1 + t)^m0`` for the
    abstentions): ``sum_x C(m_g, x) [t^(k-x)] prod(...) / C(n, k)``, in exact integer arithmetic.
    """
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n, got n={n}, k={k}")
    counts = Counter(a for a in answers if a is not None)
    m_gold = counts.pop(gold, 0)
    if m_gold == 0:
        return 0.0
    abstentions = n - m_gold - sum(counts.values())
    total = 0
    for x in range(1, min(m_gold, k) + 1):
        rest = k - x
        poly = [math.comb(abstentions, j) for j in range(min(abstentions, rest) + 1)]
        for answer, m in counts.items():
            cap = min(m, x if gold > answer else x - 1)
            poly = _poly_mul(poly, [math.comb(m, y) for y in range(cap + 1)], rest)
        if rest < len(poly):
            total += math.comb(m_gold, x) * poly[rest]
    return total / math.comb(n, k)


# --- tokenizers ------------------------------------------------------------------------------------


class TokenSplitter(Protocol):
    """Where the tokens of a text end (character offsets): cutting at token ``B`` is ``text[:ends[B-1]]``."""

    name: str
    identity: str
    """Equal for the same tokenizer (the mismatch check compares these)."""

    def ends(self, texts: Sequence[str]) -> list[np.ndarray]: ...


@dataclass
class ApproxSplitter:
    """:class:`kit.runtime.tokens.ApproxTokenizer` (the replay engine's and simulator's counts) with offsets."""

    name: str = "approx"

    def __post_init__(self) -> None:
        from kit.runtime.tokens import ApproxTokenizer

        self._tok = ApproxTokenizer()
        self.identity = f"approx:{self._tok.max_letters}:{self._tok.max_punct}"

    def ends(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            pieces = self._tok.regex.findall(text)  # pieces concatenate back to the text
            out.append(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)).cumsum())
        return out


class HFSplitter:
    """A model's own (fast) tokenizer; offsets come from the Rust backend in batches."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # transformers raises OSError, ValueError, TypeError... for bad folders
            raise ValueError(f"cannot load a tokenizer from {path}: {type(exc).__name__}: {exc}") from None
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{path}: the budget curve needs a fast tokenizer (tokenizer.json) for offsets")
        self._backend = backend
        self.name = name or str(path)
        self.identity = "hf:" + hashlib.sha256(backend.to_str().encode()).hexdigest()

    def ends(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for enc in self._backend.encode_batch(list(texts), add_special_tokens=False):
            e = np.fromiter((o[1] for o in enc.offsets), dtype=np.int64, count=len(enc.offsets))
            # bytes of one character split over several tokens share offsets; keep the cut monotone
            out.append(np.maximum.accumulate(e) if len(e) else e)
        return out


def resolve_tokenizer(spec: str | Path) -> TokenSplitter:
    """``approx`` (kit.runtime.tokens.ApproxTokenizer), ``tiny`` (the built-in tiny model's) or a tokenizer folder."""
    if str(spec) == "approx":
        return ApproxSplitter()
    if str(spec) == "tiny":
        from kit.runtime.tiny_model import build_tiny_model

        return HFSplitter(build_tiny_model(), name="tiny")
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer not found: {path} (use approx, tiny or a model/tokenizer folder)")
    return HFSplitter(path)


def _own_tokenizer(model: str | None) -> TokenSplitter | None:
    """The tokenizer a recorded run generated with, when it is available here."""
    if not model:
        return None
    if model.startswith("replay:"):
        return ApproxSplitter()  # the replay engine counts with ApproxTokenizer
    path = Path(model)
    if path.is_dir() and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return HFSplitter(path)
    return None


# --- runs ------------------------------------------------------------------------------------------


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


def _track(items: Sequence, description: str, console: Console | None) -> Iterable:
    if console is None or not console.is_terminal:  # a bar in a log file is only noise
        return items
    from rich.progress import track

    return track(items, description=description, console=console, transient=True)


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
            from kit.runtime.problems import load_problems

            return {p.id: p.problem for p in load_problems(problems)}
        if options.get("engine") == "replay":
            from kit.offline.traces import load_pool

            return {s.problem_id: s.problem for s in load_pool(options.get("traces") or "skythought_aime24")}
        if options:
            from kit.runtime.problems import load_problems

            return {p.id: p.problem for p in load_problems(None)}
    except (FileNotFoundError, ValueError):
        pass
    return {}


def load_records_run(path: str | Path, *, tokenizer: TokenSplitter | None = None,
                     name: str | None = None) -> Run:
    """A run from a ``records.jsonl`` (see :mod:`kit.runtime.records`), validated field by field.

    Errors name the file, line and field: an older record version (:class:`RecordFormatError` from
    :func:`kit.runtime.records.read_events`), a missing or mistyped field, a file holding two runs. A sample
    without ``tokens`` is an error unless ``tokenizer`` is given: then its text is recounted (noted).
    """
    path = Path(path)
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
    profile = get_profile(start.get("profile"))
    model = start.get("model") if isinstance(start.get("model"), str) else None
    notes: list[str] = []
    if not starts:
        notes.append("no run_start event: model and profile unknown (profile aimo2 assumed)")
    samples: dict[str, list[EvalSample]] = {}
    problem_events: list[tuple[int, dict]] = []
    recounted = 0
    for i, e in enumerate(events):
        kind = e.get("event")
        where = where_of(i)
        if kind == "problem":
            problem_events.append((i, e))
            continue
        if kind != "sample":
            continue
        pid = str(_check(e, "problem_id", (str, int), where))
        text = _check(e, "text", (str,), where)
        tokens = _check(e, "tokens", (int,), where, optional=True)
        if tokens is None:
            if tokenizer is None:
                raise RecordFormatError(
                    f"{where()}: sample event (problem {pid}) has no 'tokens' field: token counts are needed "
                    "for lengths and budgets; pass --tokenizer to recount them from the text")
            tokens = len(tokenizer.ends([text])[0])
            recounted += 1
        index = _check(e, "index", (int,), where)
        if any(s.index == index for s in samples.get(pid, ())):
            raise RecordFormatError(f"{where()}: sample {index} of problem {pid} is recorded twice")
        started = _check(e, "started", (int, float), where, optional=True)
        finished = _check(e, "finished", (int, float), where, optional=True)
        code = _check(e, "code", (list,), where, optional=True) or []
        statuses = [c.get("status") if isinstance(c, dict) else None for c in code]
        samples.setdefault(pid, []).append(EvalSample(
            index=index,
            text=text,
            tokens=tokens,
            answer=_check(e, "answer", (int,), where, optional=True),
            finish_reason=_check(e, "finish_reason", (str,), where),
            seconds=None if started is None or finished is None else float(finished - started),
            finished_at=None if finished is None else float(finished),
            code_calls=len(code),
            code_errors=sum(s not in CODE_OK_STATUSES for s in statuses),
        ))
    if recounted:
        notes.append(f"{recounted} samples had no token count: recounted with {tokenizer.name}")  # type: ignore[union-attr]
    texts = _problem_texts(start, [e for _, e in problem_events])
    problems = []
    for i, e in problem_events:
        where = where_of(i)
        pid = str(_check(e, "problem_id", (str, int), where))
        problems.append(EvalProblem(
            problem_id=pid,
            problem=texts.get(pid, ""),
            gold=_check(e, "gold", (int,), where, optional=True),
            selected=_check(e, "answer", (int,), where),
            samples=samples.pop(pid, []),
            tokens=_check(e, "tokens", (int,), where, optional=True) or 0,
            seconds=_check(e, "seconds", (int, float), where, optional=True),
            reason=str(e.get("reason") or "").split("\n")[0],
        ))
    if samples:
        notes.append(f"left out {len(samples)} problem(s) with samples but no problem event (run stopped "
                     f"mid-problem): {', '.join(sorted(samples)[:5])}")
    if not problems:
        raise RecordFormatError(f"{path}: no problem events: nothing to evaluate")
    default = path.parent.name if path.name == "records.jsonl" and path.parent.name else path.stem
    return Run(name=name or default, kind="records", source=str(path), profile=profile, problems=problems,
               model=model, notes=notes)


def _code_stats(text: str) -> tuple[int, int]:
    """(executed code blocks, blocks whose output shows an error) of a recorded TIR text.

    Trace pools keep no sandbox status, so each ```` ```output ```` block is judged by
    :func:`kit.offline.selection.code_ok_from_text` (a traceback or an ``...Error`` line): the same verdict the
    selection strategies see."""
    from kit.offline.selection import code_ok_from_text

    blocks = [m.group(0) for m in _OUTPUT_BLOCK.finditer(text)]
    return len(blocks), sum(code_ok_from_text(b) is False for b in blocks)


def load_pool_run(pool: str | Path, *, profile: Profile | str | None = None,
                  tokenizer: TokenSplitter | None = None, name: str | None = None,
                  console: Console | None = None) -> Run:
    """A run from a recorded trace pool (bundled name, folder or file; see :mod:`kit.offline.traces`).

    Samples are grouped by problem id across the pool's files (SkyThought: 11 checkpoints = 11 samples
    per problem). Answers and golds are normalised with the profile (a gold that is not an integer in
    range leaves the problem unscored); tokens are counted with ``tokenizer`` (default: approx).
    """
    from kit.offline.traces import load_pool

    prof = get_profile(profile)
    tok = tokenizer or ApproxSplitter()
    recorded = load_pool(pool)
    ends: list[np.ndarray] = []
    step = 16
    batches = [recorded[i : i + step] for i in range(0, len(recorded), step)]
    for batch in _track(batches, f"tokenising {pool} ({tok.name})", console):
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
                                      code_calls=calls, code_errors=errors))
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


def tokenizer_for_records(run: Run, chosen: TokenSplitter | None) -> TokenSplitter:
    """The tokenizer that cuts a records run's samples, refusing one that differs from the run's own.

    Budget cuts must fall where the model's token budget would have fallen: with another vocabulary the
    curve is shifted. The run's own tokenizer is found from ``run_start``'s model (``replay:`` → approx;
    a local model folder → its tokenizer). When it is not here, ``chosen`` is used and the recorded token
    counts are recounted as a check (:func:`verify_token_counts`).
    """
    own = _own_tokenizer(run.model)
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


def _token_ends(run: Run, samples: Sequence[tuple[EvalProblem, EvalSample]],
                console: Console | None) -> list[np.ndarray]:
    """Token end offsets of the samples, computed once per run (one tokenisation, every budget)."""
    if run.tokenizer is None:
        raise ValueError(f"{run.source}: no tokenizer to count and cut tokens (load runs with load_runs, or set "
                         "run.tokenizer = tokenizer_for_records(run, ...))")
    todo = [(p.problem_id, s) for p, s in samples if (p.problem_id, s.index) not in run.ends]
    step = 16
    for k in _track(range(0, len(todo), step), f"tokenising {run.name} ({run.tokenizer.name})", console):
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
    ends = _token_ends(run, pairs, console)
    ratio = sum(len(e) for e in ends) / sum(s.tokens for _, s in pairs)
    run.recount_ratio = ratio
    lo, hi = RECOUNT_TOLERANCE
    if run.recount_check and not lo <= ratio <= hi:
        raise ValueError(
            f"{run.source}: tokenizer mismatch: recounting {len(pairs)} recorded samples with "
            f"{run.tokenizer.name} gives {ratio:.2f}x the recorded token counts (accepted {lo}-{hi}); the "
            f"run was generated with {run.model!r}: pass that model's tokenizer with --tokenizer")
    return ratio


# --- candidates for answer selection -----------------------------------------------------------------


def selection_problems(run: Run, *, scored_only: bool = False) -> list[SelectionProblem]:
    """The run's problems as :func:`kit.offline.selection.strategy_table` takes them: finished samples as
    candidates **in sample order** (so the ``first`` baseline is sample 0, not the first finisher),
    ``finish_rank`` from finish times (records) or lengths (pools), ``code_ok`` from the code calls
    (None: no code)."""
    from kit.offline.selection import Candidate

    out = []
    for p in run.scored if scored_only else run.problems:
        rank = {s.index: r for r, s in enumerate(p.finish_order())}  # indices are unique per problem
        cands = [Candidate(answer=s.answer, tokens=s.tokens, finish_rank=rank[s.index], code_ok=s.code_ok,
                           text=s.text)
                 for s in sorted(p.done, key=lambda s: s.index)]
        out.append((p.problem_id, p.problem, p.gold, cands))
    return out


# --- metrics ---------------------------------------------------------------------------------------


def default_ks(max_n: int) -> list[int]:
    """1, 2, 4, 8, ... up to ``max_n``, and ``max_n`` itself."""
    ks = [k for k in (2**i for i in range(12)) if k <= max_n]
    return sorted({*ks, max_n}) if max_n >= 1 else []


def samples_frame(runs: Sequence[Run]) -> pl.DataFrame:
    """One row per finished sample of every run (no texts)."""
    rows = [{"run": r.name, "problem_id": p.problem_id, "index": s.index, "scored": p.gold is not None,
             "answer": s.answer, "correct": p.gold is not None and s.answer == p.gold, "tokens": s.tokens,
             "seconds": s.seconds, "code_calls": s.code_calls, "code_errors": s.code_errors}
            for r in runs for p in r.problems for s in p.done]
    schema = {"run": pl.String, "problem_id": pl.String, "index": pl.Int64, "scored": pl.Boolean,
              "answer": pl.Int64, "correct": pl.Boolean, "tokens": pl.Int64, "seconds": pl.Float64,
              "code_calls": pl.Int64, "code_errors": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def problem_table(run: Run, ks: Sequence[int]) -> pl.DataFrame:
    """Per-problem metrics: samples, correct, pass@k and maj@k (null where fewer than k samples finished
    or the problem is unscored), selected answer, tokens, seconds, no-answer share, code calls."""
    rows = []
    for p in run.problems:
        done = p.done
        answers = [s.answer for s in done]
        n = len(done)
        c = sum(a == p.gold for a in answers) if p.gold is not None else None
        row: dict[str, Any] = {
            "run": run.name, "problem_id": p.problem_id, "gold": p.gold, "selected": p.selected,
            "selected_correct": None if p.gold is None else p.selected == p.gold,
            "samples": n, "unfinished": len(p.samples) - n, "correct": c,
        }
        for k in ks:
            ok = c is not None and n >= k
            row[f"pass@{k}"] = pass_at_k(n, c, k) if ok else None  # type: ignore[arg-type]
            row[f"maj@{k}"] = maj_at_k(answers, p.gold, k) if ok else None  # type: ignore[arg-type]
        row |= {
            "no_answer": sum(a is None for a in answers) / n if n else None,
            "tokens": p.tokens,
            "tokens/sample": sum(s.tokens for s in done) / n if n else None,
            "seconds": p.seconds,
            "code_calls": sum(s.code_calls for s in done),
            "code_errors": sum(s.code_errors for s in done),
            "reason": p.reason,
        }
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("gold", "selected").cast(pl.Int64), pl.col("seconds").cast(pl.Float64),
        *(pl.col(f"{m}@{k}").cast(pl.Float64) for k in ks for m in ("pass", "maj")))


def run_summary(run: Run, problems: pl.DataFrame, samples: pl.DataFrame, ks: Sequence[int]) -> dict[str, Any]:
    """Overall metrics of one run (one row of the side-by-side table). Accuracy metrics (pass@k, maj@k,
    selected, no-answer share) use the scored problems, pass@k / maj@k those with at least k finished
    samples; cost metrics (tokens, seconds, code calls) every problem."""
    scored = problems.filter(pl.col("gold").is_not_null())
    smp = samples.filter(pl.col("run") == run.name)
    acc = scored.select(
        pl.len().alias("scored"),
        *(pl.col(f"{m}@{k}").mean() for k in ks for m in ("pass", "maj")),
        pl.col("selected_correct").cast(pl.Float64).mean().alias("selected"),
    ).row(0, named=True)
    stats = smp.select(
        pl.len().alias("samples"),
        pl.col("tokens").mean().alias("tokens/sample"),
        pl.col("seconds").mean().alias("seconds/sample"),
        pl.col("answer").filter(pl.col("scored")).is_null().mean().alias("no_answer"),
        pl.col("code_calls").mean().alias("code_calls/sample"),
        (pl.col("code_calls") > 0).mean().alias("code_share"),
        (pl.col("code_errors").sum() / pl.col("code_calls").sum()).alias("code_error_rate"),
    ).row(0, named=True)
    per_problem = problems.select(
        pl.col("tokens").mean().alias("tokens/problem"),
        pl.col("seconds").mean().alias("seconds/problem"),
        pl.col("unfinished").sum().alias("unfinished"),
    ).row(0, named=True)
    out = {"run": run.name, "kind": run.kind, "problems": problems.height, **acc, **stats, **per_problem}
    if not out["code_calls/sample"]:
        out["code_error_rate"] = None
    return out


def budget_curve(run: Run, budgets: Sequence[int], console: Console | None = None) -> pl.DataFrame:
    """Accuracy as a function of the token budget, from the recorded samples alone.

    Each finished sample of a scored problem is tokenised once (:attr:`Run.tokenizer`, end offsets
    cached); at budget ``B`` a sample longer than ``B`` tokens is cut at the end of its ``B``-th token and
    its answer re-extracted from the cut text (what the solver reads from a sample stopped at max_tokens),
    a shorter one keeps its full answer. Columns: pass@1 and maj@n (vote of all finished samples, ties to
    the larger answer) averaged over problems, mean tokens used per sample, share of samples cut and of
    samples without an answer.
    """
    pairs = [(p, s) for p in run.scored for s in p.done]
    ends = _token_ends(run, pairs, console)
    cache: dict[str, int | None] = {}
    full = [answer_of(s.text, run.profile, cache) for _, s in pairs]
    rows = []
    for budget in _track(sorted(set(budgets)), f"budget curve {run.name}", console):
        by_problem: dict[str, list[int | None]] = {}
        used = cut = 0
        for (p, s), e, a in zip(pairs, ends, full, strict=True):
            if len(e) > budget:
                a = answer_of(s.text[: int(e[budget - 1])], run.profile, cache)
                cut += 1
            used += min(len(e), budget)
            by_problem.setdefault(p.problem_id, []).append(a)
        golds = {p.problem_id: p.gold for p in run.scored}
        per_sample = [sum(a == golds[pid] for a in ans) / len(ans) for pid, ans in by_problem.items()]
        votes = [majority([Vote(a) for a in ans]) == golds[pid] for pid, ans in by_problem.items()]
        flat = [a for ans in by_problem.values() for a in ans]
        rows.append({"run": run.name, "budget": budget,
                     "pass@1": sum(per_sample) / len(per_sample) if per_sample else None,
                     "maj@n": sum(votes) / len(votes) if votes else None,
                     "tokens/sample": used / len(pairs) if pairs else None,
                     "cut": cut / len(pairs) if pairs else None,
                     "no_answer": sum(a is None for a in flat) / len(flat) if flat else None})
    schema = {"run": pl.String, "budget": pl.Int64, "pass@1": pl.Float64, "maj@n": pl.Float64,
              "tokens/sample": pl.Float64, "cut": pl.Float64, "no_answer": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _scorer_training_ids(scorer: Any, run: Run) -> set[str]:
    """Problem ids of ``run`` the scorer was trained on (its ``scorer.json`` names source and problems)."""
    meta = getattr(scorer, "meta", {}) or {}
    source = str(meta.get("source", ""))
    same = source in (f"pool {run.source}", run.source) or (run.kind == "records" and Path(source) == Path(run.source))
    return set(map(str, meta.get("train_problems", []))) if same else set()


def strategies_table(run: Run, *, n_boot: int = 1000, seed: int = 0, scorer: Any = None) -> pl.DataFrame:
    """Every :data:`kit.offline.selection.STRATEGIES` entry on the run's scored problems, with bootstrap CIs.

    With a :class:`kit.learn.scorer.Scorer`, a ``scorer`` row is added (σ(score)-weighted vote). A scorer is
    only judged on problems it never saw: if it was trained on this run's source, its row and a
    ``majority`` row on the same held-out problems are added instead (``[held-out]``)."""
    from kit.offline.selection import STRATEGIES, strategy_table

    problems = selection_problems(run, scored_only=True)
    tables = [strategy_table(problems, STRATEGIES, n_boot=n_boot, seed=seed)]
    if scorer is not None:
        from kit.learn.scorer import scorer_strategy

        seen = _scorer_training_ids(scorer, run)
        held = [p for p in problems if p[0] not in seen]
        if held:
            scored = scorer.fill(held)
            if seen:
                named = {"majority [held-out]": STRATEGIES["majority"], "scorer [held-out]": scorer_strategy(scorer)}
            else:
                named = {"scorer": scorer_strategy(scorer)}
            tables.append(strategy_table(scored, named, n_boot=n_boot, seed=seed))
        else:
            run.notes.append("the scorer was trained on every scored problem of this run: no scorer row")
    return pl.concat(tables).select(pl.lit(run.name).alias("run"), pl.all())


# --- the whole evaluation ------------------------------------------------------------------------


@dataclass
class Evaluation:
    runs: list[Run]
    ks: list[int]
    budgets: list[int]
    summary: pl.DataFrame
    problems: pl.DataFrame
    samples: pl.DataFrame
    curve: pl.DataFrame
    strategies: pl.DataFrame
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return _clean({
            "runs": [{"name": r.name, "kind": r.kind, "source": r.source, "model": r.model,
                      "profile": r.profile.name, "tokenizer": r.tokenizer.name if r.tokenizer else None,
                      "recount_ratio": r.recount_ratio, "notes": r.notes} for r in self.runs],
            "ks": self.ks, "budgets": self.budgets,
            "metrics": self.summary.to_dicts(), "problems": self.problems.to_dicts(),
            "budget_curve": self.curve.to_dicts(), "strategies": self.strategies.to_dicts(),
            "seconds": round(self.seconds, 3),
        })


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _unique_names(runs: Sequence[Run]) -> None:
    seen: Counter[str] = Counter()
    for r in runs:
        seen[r.name] += 1
        if seen[r.name] > 1:
            r.name = f"{r.name}#{seen[r.name]}"


def load_runs(records: Sequence[str | Path] = (), pools: Sequence[str | Path] = (), *,
              tokenizer: str | Path | None = None, profile: str | None = None,
              console: Console | None = None) -> list[Run]:
    """Load and check every input; resolve each run's tokenizer (see :func:`tokenizer_for_records`)."""
    if not records and not pools:
        raise ValueError("nothing to evaluate: give --records PATH, --pool NAME|PATH or --run")
    chosen = resolve_tokenizer(tokenizer) if tokenizer is not None else None
    runs = []
    for path in records:
        run = load_records_run(path, tokenizer=chosen)
        run.tokenizer = tokenizer_for_records(run, chosen)
        runs.append(run)
    for pool in pools:
        runs.append(load_pool_run(pool, profile=profile, tokenizer=chosen, console=console))
    _unique_names(runs)
    return runs


def evaluate(runs: Sequence[Run], *, ks: Sequence[int] | None = None,
             budgets: Sequence[int] = DEFAULT_BUDGETS, n_boot: int = 1000, seed: int = 0,
             strategies: bool = True, scorer: str | Path | None = None,
             console: Console | None = None) -> Evaluation:
    """All metrics of every run: summary, per-problem rows, budget curve, strategy table (with a trained
    scorer's row when ``scorer`` names a :mod:`kit.learn.scorer` folder)."""
    t0 = time.perf_counter()
    runs = list(runs)
    max_n = max((len(p.done) for r in runs for p in r.problems), default=0)
    ks = sorted(set(ks)) if ks else default_ks(max_n)
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be >= 1, got {ks}")
    if not budgets or any(b < 1 for b in budgets):
        raise ValueError(f"budgets must be >= 1 tokens, got {list(budgets)}")
    for run in runs:
        verify_token_counts(run, console)
    loaded_scorer = None
    if scorer is not None and strategies:
        from kit.learn.scorer import Scorer

        loaded_scorer = Scorer.load(scorer)
    samples = samples_frame(runs)
    tables = [problem_table(r, ks) for r in runs]
    summary = pl.DataFrame([run_summary(r, t, samples, ks) for r, t in zip(runs, tables, strict=True)],
                           infer_schema_length=None)
    curve = pl.concat([budget_curve(r, budgets, console) for r in runs])
    strat = pl.concat([strategies_table(r, n_boot=n_boot, seed=seed, scorer=loaded_scorer)
                       for r in runs if r.scored],
                      how="diagonal_relaxed") if strategies and any(r.scored for r in runs) else pl.DataFrame()
    return Evaluation(runs=runs, ks=list(ks), budgets=sorted(set(budgets)), summary=summary,
                      problems=pl.concat(tables, how="diagonal_relaxed"), samples=samples, curve=curve,
                      strategies=strat, seconds=time.perf_counter() - t0)


# --- plots -------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_budget_curve(ev: Evaluation, path: Path) -> Path:
    """pass@1 and maj@n against the token budget, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for run in ev.runs:
        c = ev.curve.filter(pl.col("run") == run.name)
        for ax, col in zip(axes, ("pass@1", "maj@n"), strict=True):
            ax.plot(c["budget"], c[col], marker="o", label=run.name)
    for ax, title in zip(axes, ("pass@1 (mean over samples)", "maj@n (vote of all samples)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ev.budgets, [f"{b / 1000:g}k" for b in ev.budgets])
        ax.minorticks_off()
        ax.set_xlabel("token budget per sample")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lengths(ev: Evaluation, path: Path) -> Path:
    """Token-count histograms of correct, wrong and unanswered finished samples (scored problems), per run."""
    plt = _pyplot()
    n = len(ev.runs)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.8 * n), squeeze=False)
    for ax, run in zip(axes[:, 0], ev.runs, strict=True):
        s = ev.samples.filter((pl.col("run") == run.name) & pl.col("scored"))
        groups = {"correct": s.filter(pl.col("correct")), "wrong answer": s.filter(
            ~pl.col("correct") & pl.col("answer").is_not_null()), "no answer": s.filter(pl.col("answer").is_null())}
        lengths = {k: g["tokens"].to_list() for k, g in groups.items()}
        longest = max((max(v) for v in lengths.values() if v), default=0)
        if longest:
            ax.hist(list(lengths.values()), bins=np.linspace(0, longest, 31),
                    label=[f"{k} ({len(v)})" for k, v in lengths.items()],
                    color=["tab:green", "tab:red", "tab:gray"], alpha=0.8)
        ax.set_title(f"{run.name}: tokens per sample")
        ax.set_xlabel("tokens")
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_time(ev: Evaluation, path: Path) -> Path | None:
    """Seconds per problem of each records run, in run order, coloured by the selected answer's verdict."""
    runs = [r for r in ev.runs if r.kind == "records"]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.8 * len(runs)), squeeze=False)
    colours = {True: "tab:green", False: "tab:red", None: "tab:gray"}
    for ax, run in zip(axes[:, 0], runs, strict=True):
        t = ev.problems.filter(pl.col("run") == run.name)
        secs = [s or 0.0 for s in t["seconds"].to_list()]
        ax.bar(range(len(secs)), secs, color=[colours[v] for v in t["selected_correct"].to_list()])
        ax.set_title(f"{run.name}: seconds per problem (green right, red wrong, grey unscored)")
        ax.set_xlabel("problem (run order)")
        ax.set_ylabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- report ------------------------------------------------------------------------------------------


def _markdown(df: pl.DataFrame) -> str:
    if df.is_empty():
        return "(none)"
    df = df.with_columns(pl.col(pl.String).str.replace_all("|", "\\|", literal=True))
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=120, float_precision=3, tbl_width_chars=65_535):
        return str(df)


def side_by_side(summary: pl.DataFrame) -> pl.DataFrame:
    """The summary transposed: one row per metric, one column per run."""
    shown = summary.drop("kind").with_columns(
        pl.col(pl.Float64).round(3)).with_columns(pl.exclude("run").cast(pl.String).fill_null("–"))
    return shown.transpose(include_header=True, header_name="metric", column_names="run")


def write_report(ev: Evaluation, out: Path, *, max_problem_rows: int = 100) -> dict[str, Path]:
    """``report.md`` with tables and the PNG plots next to it; returns the written files."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"budget_curve": plot_budget_curve(ev, out / "budget_curve.png"),
             "lengths": plot_lengths(ev, out / "lengths.png")}
    time_png = plot_time(ev, out / "time_per_problem.png")
    if time_png is not None:
        files["time_per_problem"] = time_png
    runs = pl.DataFrame([{"run": r.name, "kind": r.kind, "source": r.source, "model": r.model or "–",
                          "profile": r.profile.name, "tokenizer": r.tokenizer.name if r.tokenizer else "–",
                          "recount ratio": "–" if r.recount_ratio is None else f"{r.recount_ratio:.3f}",
                          "notes": "; ".join(r.notes) or "–"} for r in ev.runs])
    parts = [
        "# Evaluation report", "",
        f"`python -m kit evaluate`, {len(ev.runs)} run(s), {ev.seconds:.1f} s. Metric definitions: "
        "docs/evaluation.md. Accuracy metrics average the scored problems (integer gold); sample metrics use "
        "finished samples only.", "",
        "## Runs", "", _markdown(runs), "",
        "## Metrics side by side", "", _markdown(side_by_side(ev.summary)), "",
        "## Budget curve", "",
        "Each sample cut at B tokens and its answer re-extracted (no re-generation).", "",
        "![budget curve](budget_curve.png)", "",
        _markdown(ev.curve.with_columns(pl.col(pl.Float64).round(3))), "",
        "## Answer selection", "",
        "Strategies of kit.offline.selection on the finished samples of each scored problem; 95 % bootstrap CI "
        "over problems.", "",
        _markdown(ev.strategies.with_columns(pl.col(pl.Float64).round(3))), "",
        "## Lengths of correct and wrong samples", "", "![lengths](lengths.png)", "",
    ]
    if time_png is not None:
        parts += ["## Time per problem", "", "![time per problem](time_per_problem.png)", ""]
    parts += ["## Per problem", ""]
    if len(ev.runs) > 1:
        wide = ev.problems.pivot(on="run", index="problem_id", values="pass@1")
        parts += ["pass@1 side by side:", "", _markdown(wide.head(max_problem_rows).with_columns(
            pl.col(pl.Float64).round(3))), ""]
    cols = ["problem_id", "gold", "selected", "selected_correct", "samples", "correct", "pass@1",
            f"maj@{ev.ks[-1]}" if ev.ks else "pass@1", "no_answer", "tokens", "seconds", "reason"]
    for run in ev.runs:
        t = ev.problems.filter(pl.col("run") == run.name).select(list(dict.fromkeys(cols))).with_columns(
            pl.col(pl.Float64).round(3))
        more = f" (first {max_problem_rows} of {t.height}; all in the JSON)" if t.height > max_problem_rows else ""
        parts += [f"### {run.name}{more}", "", _markdown(t.head(max_problem_rows)), ""]
    report = out / "report.md"
    report.write_text("\n".join(parts), encoding="utf-8")
    files["report"] = report
    return files


def write_json(ev: Evaluation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ev.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def _rich_table(df: pl.DataFrame, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in df.columns:
        table.add_column(col, justify="right" if df[col].dtype.is_numeric() else "left")
    for row in df.iter_rows():
        table.add_row(*("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    return table


def print_summary(ev: Evaluation, console: Console) -> None:
    """The side-by-side metrics and the strategy table as rich tables."""
    console.print(_rich_table(side_by_side(ev.summary), "evaluation"))
    if not ev.strategies.is_empty():
        console.print(_rich_table(ev.strategies, "answer selection (95 % bootstrap CI)"))
