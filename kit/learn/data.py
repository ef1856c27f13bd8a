"""SFT / RL data curation with polars: load, verify, filter, pick the shortest correct trace, write.

One frame schema for every input (one row per generation; a problem without traces is one row with a
null generation)::

    problem_id str, problem str, answer str, source str,
    generation str|null, generation_correct bool|null, generation_tokens int|null

plus the derived ``answer_int`` (the integer answer, null for non-integer answers: they are kept for
grading but flagged, and never written to the RL set).

Rules (see ``docs/curation.md``): empty traces are dropped at load; generations without a correctness
flag are graded with ``kit.runtime.answers.grade(extract_answer(gen), answer)`` (cached per text hash and
answer); problems are dropped for contamination (equal normalised text, >= 25% of either side's word
13-grams shared, or word 8-gram Jaccard >= 0.5, against any eval set), duplicates (equal normalised text, or word 8-gram
Jaccard >= 0.8 with an earlier kept problem), pass rate outside the band (SFT only), no correct trace
within the token limit (SFT only) and non-integer answers (RL only). Every drop is counted in a
:class:`DropReport`.

``generation_tokens`` is an approximation (``kit.runtime.tokens.ApproxTokenizer``, as replay and simulation) unless the input file gives a count: no
tokenizer is needed to curate.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kit.offline.runs import RecordFormatError, load_records_run, records_file
from kit.offline.traces import BUNDLED_POOLS, TraceFormatError, load_pool
from kit.runtime.answers import END_OF_REASONING, extract_answer, grade, to_int_answer
from kit.runtime.problems import BUNDLED_PROBLEMS, problems_path
from kit.runtime.prompts import COT
from kit.runtime.tokens import ApproxTokenizer

SCHEMA: dict[str, pl.DataType] = {
    "problem_id": pl.String,
    "problem": pl.String,
    "answer": pl.String,
    "source": pl.String,
    "generation": pl.String,
    "generation_correct": pl.Boolean,
    "generation_tokens": pl.Int64,
}
EVAL_SETS: tuple[str, ...] = ("aime24", "aime25", "aimo2_reference", "aimo1_train")
"""Bundled decontamination targets (``kit/runtime/resources/problems``)."""


class DataError(ValueError):
    """An input file that cannot be curated (missing field, bad layout); names the file and field."""


# --- drop report ------------------------------------------------------------------------------------


@dataclass
class DropReport:
    """Counts of what was dropped and why, per stage (``load``, ``problems``, ``sft``, ``rl``)."""

    drops: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    totals: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, reason: str, n: int = 1) -> None:
        if n:
            self.drops[stage][reason] += n

    def to_dict(self) -> dict:
        return {"dropped": {s: dict(sorted(c.items())) for s, c in self.drops.items()}, "totals": dict(self.totals)}

    def frame(self) -> pl.DataFrame:
        rows = [(s, r, n) for s, c in self.drops.items() for r, n in sorted(c.items())]
        return pl.DataFrame(rows, schema={"stage": pl.String, "reason": pl.String, "count": pl.Int64}, orient="row")

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def __str__(self) -> str:
        lines = [f"{k}: {v}" for k, v in self.totals.items()]
        for stage, counts in self.drops.items():
            for reason, n in sorted(counts.items()):
                lines.append(f"dropped [{stage}] {reason}: {n}")
        return "\n".join(lines)


# --- loaders ------------------------------------------------------------------------------------------


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix == ".csv":
            return pl.read_csv(path, encoding="utf8-lossy", infer_schema=False)
        if path.suffix in (".jsonl", ".json"):
            raw = path.read_bytes().decode("utf-8", errors="replace")
            return pl.read_ndjson(raw.encode("utf-8"), infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: could not be parsed ({exc})") from None
    raise DataError(f"{path}: unsupported format {path.suffix!r} (use .jsonl, .csv or .parquet)")


def _require(df: pl.DataFrame, path: Path, fields: Sequence[str], layout: str) -> None:
    missing = [c for c in fields if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing} for the {layout} layout; found {df.columns}")


def _finish(df: pl.DataFrame, report: DropReport | None, where: str) -> pl.DataFrame:
    """Cast to SCHEMA, fill token counts, flag integer answers, drop empty traces (with a reason)."""
    for name, dtype in SCHEMA.items():
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(name))
    df = df.select([pl.col(n).cast(t) for n, t in SCHEMA.items()])
    empty = df["generation"].is_not_null() & (df["generation"].str.strip_chars().str.len_chars() == 0)
    if report is not None:
        report.add("load", "empty_trace", int(empty.sum()))
    if int(empty.sum()):
        df = df.filter(~empty)
    df = df.with_columns(
        pl.when(pl.col("generation_tokens").is_null() & pl.col("generation").is_not_null())
        .then(pl.col("generation").map_elements(ApproxTokenizer().count, return_dtype=pl.Int64))
        .otherwise(pl.col("generation_tokens"))
        .cast(pl.Int64)
        .alias("generation_tokens"),
    )
    df = with_answer_flags(df)
    if report is not None:
        report.add("load", "no_answer", int(df.filter(pl.col("answer").is_null()).select("problem_id").n_unique()))
    return df


def with_answer_flags(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``answer_int``: the answer's integer value by the kit's one reading of answers
    (:func:`kit.runtime.answers.to_int_answer`, no modulus), null where it is not an integer (such rows are
    kept for grading, and flagged)."""
    values = {a: to_int_answer(a) for a in df["answer"].unique().to_list() if a is not None}
    return df.with_columns(pl.col("answer").replace_strict(values, default=None, return_dtype=pl.Int64)
                           .alias("answer_int"))


def load_problem_file(path: str | Path, source: str | None = None, report: DropReport | None = None) -> pl.DataFrame:
    """Our problem files (jsonl/csv with ``id``, ``problem``, ``answer``) or a bundled set name; no traces."""
    p = problems_path(path) if isinstance(path, str) and path in BUNDLED_PROBLEMS else Path(path)
    df = _read_table(p)
    _require(df, p, ["id", "problem", "answer"], "problem-file")
    src = source or p.stem
    df = df.select(
        (pl.lit(src + ":") + pl.col("id").cast(pl.String)).alias("problem_id"),
        pl.col("problem").cast(pl.String),
        pl.col("answer").cast(pl.String),
        pl.lit(src).alias("source"),
    )
    return _finish(df, report, str(p))


def load_trace_pool(pool: str | Path, source: str | None = None, report: DropReport | None = None) -> pl.DataFrame:
    """Qwen-harness / NeMo-Skills trace files (a bundled pool name, folder or file) via ``kit.offline.traces``."""
    src = source or (pool if isinstance(pool, str) and "/" not in pool else Path(pool).stem)
    try:
        samples = load_pool(pool)
    except (TraceFormatError, FileNotFoundError) as exc:
        raise DataError(str(exc)) from None
    rows = {
        "problem_id": [f"{src}:{s.problem_id}" for s in samples],
        "problem": [s.problem for s in samples],
        "answer": [s.gold for s in samples],
        "source": [src] * len(samples),
        "generation": [s.text for s in samples],
        "generation_correct": [s.recorded_correct for s in samples],
    }
    return _finish(pl.DataFrame(rows, schema={k: SCHEMA[k] for k in rows}), report, str(pool))


def _ids(df: pl.DataFrame, src: str) -> pl.Expr:
    for c in ("problem_id", "uuid", "id"):
        if c in df.columns:
            return (pl.lit(src + ":") + pl.col(c).cast(pl.String)).alias("problem_id")
    return (pl.lit(src + ":") + pl.int_range(pl.len()).cast(pl.String)).alias("problem_id")


def load_openr1(path: str | Path, source: str | None = None, report: DropReport | None = None) -> pl.DataFrame:
    """OpenR1-Math layout: ``problem``, ``answer``, ``generations`` (list[str]) and optionally
    ``correctness_math_verify`` (list[bool], same length); parquet or jsonl."""
    p = Path(path)
    df = _read_table(p)
    _require(df, p, ["problem", "answer", "generations"], "OpenR1 (generations)")
    src = source or p.stem
    has_flags = "correctness_math_verify" in df.columns
    df = df.select(
        _ids(df, src),
        pl.col("problem").cast(pl.String),
        pl.col("answer").cast(pl.String),
        pl.col("generations"),
        pl.col("correctness_math_verify") if has_flags else pl.lit(None, dtype=pl.List(pl.Boolean)).alias("correctness_math_verify"),
    )
    if has_flags:
        bad = df.filter(
            pl.col("correctness_math_verify").is_not_null()
            & (pl.col("correctness_math_verify").list.len() != pl.col("generations").list.len())
        )
        if bad.height:
            raise DataError(f"{p}: field 'correctness_math_verify' length differs from 'generations' "
                            f"(first: {bad['problem_id'][0]})")
    rows: dict[str, list] = {k: [] for k in ("problem_id", "problem", "answer", "generation", "generation_correct")}
    for pid, prob, ans, gens, flags in df.iter_rows():
        gens = gens or []
        flags = flags if flags else [None] * len(gens)
        if not gens:  # problem kept, without traces
            gens, flags = [None], [None]
        for g, f in zip(gens, flags, strict=True):
            for k, v in zip(rows, (pid, prob, ans, g, f), strict=True):
                rows[k].append(v)
    out = pl.DataFrame(rows, schema={k: SCHEMA[k] for k in rows}).with_columns(pl.lit(src).alias("source"))
    return _finish(out, report, str(p))


def load_messages(path: str | Path, source: str | None = None, report: DropReport | None = None) -> pl.DataFrame:
    """Light-R1 layout: ``messages`` (list of {role, content}: first user = problem, last assistant =
    generation) and ``answer``; parquet or jsonl."""
    p = Path(path)
    df = _read_table(p)
    _require(df, p, ["messages", "answer"], "Light-R1 (messages)")
    src = source or p.stem
    ids = df.select(_ids(df, src))["problem_id"].to_list()
    rows: dict[str, list] = {k: [] for k in ("problem_id", "problem", "answer", "generation")}
    for i, (pid, msgs, ans) in enumerate(zip(ids, df["messages"].to_list(), df["answer"].cast(pl.String), strict=True)):
        if not isinstance(msgs, list) or any(not isinstance(m, dict) or "role" not in m or "content" not in m
                                             for m in msgs):
            raise DataError(f"{p}: row {i}: field 'messages' must be a list of {{role, content}}")
        users = [m["content"] for m in msgs if m["role"] == "user"]
        assistants = [m["content"] for m in msgs if m["role"] == "assistant"]
        if not users:
            raise DataError(f"{p}: row {i}: field 'messages' has no user message (the problem)")
        for k, v in zip(rows, (pid, users[0], ans, assistants[-1] if assistants else None), strict=True):
            rows[k].append(v)
    out = pl.DataFrame(rows, schema={k: SCHEMA[k] for k in rows}).with_columns(pl.lit(src).alias("source"))
    return _finish(out, report, str(p))


def load_run_records(path: str | Path, source: str | None = None, report: DropReport | None = None) -> pl.DataFrame:
    """Our own run records — ``kit generate``'s output folder, a dry-run's, or a ``records*.jsonl`` — read by
    the offline layer's one reader (:func:`kit.offline.runs.load_records_run`): every finished sample of a
    problem with a gold, its correctness by the profile's integer answers (the run's own verdict)."""
    try:
        run = load_records_run(path)
    except (RecordFormatError, FileNotFoundError) as exc:
        raise DataError(str(exc)) from None
    src = source or run.name
    samples = [(p, s) for p in run.problems for s in p.samples if s.done and s.text]
    rows = {
        "problem_id": [f"{src}:{p.problem_id}" for p, _ in samples],
        "problem": [p.problem for p, _ in samples],
        "answer": [None if p.gold is None else str(p.gold) for p, _ in samples],
        "source": [src] * len(samples),
        "generation": [s.text for _, s in samples],
        "generation_correct": [None if p.gold is None else s.answer == p.gold for p, s in samples],
        "generation_tokens": [s.tokens for _, s in samples],
    }
    return _finish(pl.DataFrame(rows, schema={k: SCHEMA[k] for k in rows}), report, str(path))


LOADERS = {"problems": load_problem_file, "traces": load_trace_pool, "openr1": load_openr1,
           "messages": load_messages, "records": load_run_records}


def load_any(path: str | Path, kind: str = "auto", source: str | None = None,
             report: DropReport | None = None) -> pl.DataFrame:
    """Load with an explicit ``kind`` (see ``LOADERS``) or detect it (``auto``) from name/columns."""
    if kind == "auto":
        if records_file(path) is not None:
            kind = "records"
        elif (isinstance(path, str) and path in BUNDLED_POOLS) or Path(path).is_dir() or str(path).endswith(".gz"):
            kind = "traces"
        elif isinstance(path, str) and path in BUNDLED_PROBLEMS:
            kind = "problems"
        else:
            cols = _read_table(Path(path)).columns
            kind = ("openr1" if "generations" in cols else "messages" if "messages" in cols
                    else "traces" if ("code" in cols and "gt" in cols) or "expected_answer" in cols else "problems")
    if kind not in LOADERS:
        raise DataError(f"{path}: unknown input kind {kind!r}; known: auto, {', '.join(LOADERS)}")
    return LOADERS[kind](path, source=source, report=report)


# --- verification -------------------------------------------------------------------------------------

def _grade_cached(text: str, answer: str) -> bool:
    """Whether a solution's answer matches the gold (math-verify, the slow part, cached on the pair)."""
    return _grade_pair(extract_answer(text), answer)


@functools.lru_cache(maxsize=65536)
def _grade_pair(predicted: str | None, answer: str) -> bool:
    return bool(grade(predicted, answer))


def verify(df: pl.DataFrame) -> pl.DataFrame:
    """Fill ``generation_correct`` where it is null (and there is a generation and an answer) by grading."""
    todo = df["generation_correct"].is_null() & df["generation"].is_not_null() & df["answer"].is_not_null()
    if not int(todo.sum()):
        return df
    graded = df.filter(todo).select(
        pl.struct("generation", "answer").map_elements(
            lambda r: _grade_cached(r["generation"], r["answer"]), return_dtype=pl.Boolean)
    ).to_series()
    filled = df["generation_correct"].to_list()
    it = iter(graded.to_list())
    for i, t in enumerate(todo.to_list()):
        if t:
            filled[i] = next(it)
    return df.with_columns(pl.Series("generation_correct", filled, dtype=pl.Boolean))


def problem_stats(df: pl.DataFrame, max_tokens: int | None = None) -> pl.DataFrame:
    """Per problem: n_generations, n_correct, pass_rate (null without traces), min/median tokens of the
    correct generations (within ``max_tokens`` when given)."""
    correct = pl.col("generation_correct").fill_null(False)
    ok = correct if max_tokens is None else correct & (pl.col("generation_tokens") <= max_tokens)
    return df.group_by("problem_id", maintain_order=True).agg(
        pl.col("problem").first(),
        pl.col("answer").first(),
        pl.col("answer_int").first(),
        pl.col("source").first(),
        pl.col("generation").is_not_null().sum().alias("n_generations"),
        correct.sum().alias("n_correct"),
        pl.col("generation_tokens").filter(ok).min().alias("min_correct_tokens"),
        pl.col("generation_tokens").filter(ok).median().alias("median_correct_tokens"),
    ).with_columns(
        pl.when(pl.col("n_generations") > 0).then(pl.col("n_correct") / pl.col("n_generations"))
        .otherwise(None).alias("pass_rate")
    )


# --- text normalisation, n-grams ----------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def normalise(text: str) -> str:
    """Lower case, LaTeX ``$`` and punctuation removed, whitespace collapsed."""
    return " ".join(_WORD.findall(text.lower()))


def ngrams(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


# --- decontamination ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecontamRule:
    exact: bool = True
    """Contaminated if the normalised texts are equal, ..."""
    containment_ngram: int = 13
    containment_threshold: float = 0.25
    """... or at least this fraction of either problem's word ``containment_ngram``-grams is shared (a
    single shared 13-gram is not enough: AIME boilerplate such as "can be written as m n where m and n are
    relatively prime positive integers find m n" is shared by unrelated problems), ..."""
    jaccard_ngram: int = 8
    jaccard_threshold: float = 0.5
    """... or the Jaccard of the word ``jaccard_ngram``-gram sets reaches this."""


def load_eval_sets(sets: Iterable[str | Path] = EVAL_SETS) -> dict[str, list[str]]:
    """Eval problems by set name (bundled names or jsonl/csv paths with ``problem``)."""
    out: dict[str, list[str]] = {}
    for s in sets:
        bundled = isinstance(s, str) and s in BUNDLED_PROBLEMS
        p = problems_path(s) if bundled else Path(s)
        df = _read_table(p)
        _require(df, p, ["problem"], "eval-set")
        out[str(s) if bundled else p.stem] = [x for x in df["problem"].cast(pl.String).to_list() if x]
    return out


def _overlap_hit(grams: set[int], index: dict[int, list[int]], targets: list[tuple[str, set[int]]],
                 score) -> str | None:
    shared = Counter(j for g in grams for j in index.get(g, ()))
    for j, n in shared.most_common():
        name, tg = targets[j]
        if score(n, len(grams), len(tg)):
            return name
    return None


def contamination(problems: Sequence[str], eval_sets: dict[str, list[str]],
                  rule: DecontamRule = DecontamRule()) -> list[str | None]:
    """For each problem, the name of the first eval set it overlaps with (see ``DecontamRule``), or None."""
    exact: dict[str, str] = {}
    indexes = []
    for n in (rule.containment_ngram, rule.jaccard_ngram):
        index: dict[int, list[int]] = defaultdict(list)
        targets: list[tuple[str, set[int]]] = []
        for name, texts in eval_sets.items():
            for t in texts:
                grams = ngrams(t, n)
                for g in grams:
                    index[g].append(len(targets))
                targets.append((name, grams))
        indexes.append((n, index, targets))
    for name, texts in eval_sets.items():
        for t in texts:
            exact.setdefault(normalise(t), name)
    (n13, idx13, tg13), (n8, idx8, tg8) = indexes
    ct, jt = rule.containment_threshold, rule.jaccard_threshold
    out: list[str | None] = []
    for text in problems:
        hit = exact.get(normalise(text)) if rule.exact else None
        if hit is None:
            hit = _overlap_hit(ngrams(text, n13), idx13, tg13,
                               lambda s, a, b: s >= ct * min(a, b) and s > 0)
        if hit is None:
            hit = _overlap_hit(ngrams(text, n8), idx8, tg8, lambda s, a, b: s / (a + b - s) >= jt)
        out.append(hit)
    return out


def near_duplicates(problems: Sequence[str], n: int = 8, threshold: float = 0.8) -> list[tuple[str, int] | None]:
    """For each problem: None if kept, else (``"exact"``|``"near"``, index of the earlier kept problem).

    Exact = equal normalised text; near = word n-gram Jaccard >= ``threshold`` (inverted index over
    n-grams; fine for tens of thousands of problems)."""
    seen: dict[str, int] = {}
    index: dict[int, list[int]] = defaultdict(list)
    kept_grams: dict[int, set[int]] = {}
    out: list[tuple[str, int] | None] = []
    for i, text in enumerate(problems):
        key = normalise(text)
        if key in seen:
            out.append(("exact", seen[key]))
            continue
        grams = ngrams(text, n)
        shared = Counter(j for g in grams for j in index.get(g, ()))
        dup = next((j for j, c in shared.most_common()
                    if c / (len(grams) + len(kept_grams[j]) - c) >= threshold), None)
        if dup is not None:
            out.append(("near", dup))
            continue
        seen[key] = i
        kept_grams[i] = grams
        for g in grams:
            index[g].append(i)
        out.append(None)
    return out


# --- selection & writers ------------------------------------------------------------------------------


def shortest_correct(df: pl.DataFrame, max_tokens: int | None = None) -> pl.DataFrame:
    """One row per problem: its shortest correct generation (by tokens, then characters, then file order)."""
    ok = df.filter(pl.col("generation_correct").fill_null(False) & pl.col("generation").is_not_null())
    if max_tokens is not None:
        ok = ok.filter(pl.col("generation_tokens") <= max_tokens)
    return (ok.with_row_index("_order")
            .with_columns(pl.col("generation").str.len_chars().alias("_chars"))
            .sort(["generation_tokens", "_chars", "_order"])
            .unique("problem_id", keep="first", maintain_order=True)
            .sort("_order").drop("_order", "_chars"))


_SKY_TAGS = re.compile(r"<\|(?:begin|end)_of_(?:thought|solution)\|>")


def format_assistant(generation: str, answer: str) -> str:
    """``<think>\\n{reasoning}\\n</think>\\n\\n{final answer with \\boxed{}}``.

    The reasoning is the text before the last end-of-reasoning marker (``</think>``,
    ``<|end_of_thought|>``) and the final part the text after it; without a marker the whole trace is the
    reasoning. The final part gets ``\\boxed{answer}`` appended when it has no box."""
    text = generation.replace("<think>", "")
    end = None
    for marker in END_OF_REASONING:
        pos = text.rfind(marker)
        if pos >= 0 and (end is None or pos > end[0]):
            end = (pos, pos + len(marker))
    if end is None:
        reasoning, final = text, ""
    else:
        reasoning, final = text[: end[0]], text[end[1] :]
    reasoning = _SKY_TAGS.sub("", reasoning).strip()
    final = _SKY_TAGS.sub("", final).strip()
    if "\\boxed" not in final:
        final = (final + "\n\n" if final else "") + f"The final answer is $\\boxed{{{answer}}}$."
    return f"<think>\n{reasoning}\n</think>\n\n{final}"


def sft_messages(problem: str, generation: str, answer: str) -> list[dict[str, str]]:
    user = COT.messages(problem, "")
    return [*user, {"role": "assistant", "content": format_assistant(generation, answer)}]


def write_sft(chosen: pl.DataFrame, path: str | Path) -> int:
    """SFT jsonl: ``{"problem_id", "source", "messages": [user, assistant]}`` per chosen trace."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for r in chosen.iter_rows(named=True):
            row = {"problem_id": r["problem_id"], "source": r["source"],
                   "messages": sft_messages(r["problem"], r["generation"], r["answer"])}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return chosen.height


def write_rl(problems: pl.DataFrame, path: str | Path) -> int:
    """RL jsonl: ``{"problem_id", "prompt", "answer": int}`` for integer answers only."""
    rows = problems.filter(pl.col("answer_int").is_not_null())
    with Path(path).open("w", encoding="utf-8") as fh:
        for r in rows.iter_rows(named=True):
            row = {"problem_id": r["problem_id"], "source": r["source"], "prompt": r["problem"],
                   "answer": r["answer_int"]}
            if r.get("pass_rate") is not None:
                row["pass_rate"] = r["pass_rate"]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows.height


# --- pipeline -----------------------------------------------------------------------------------------


@dataclass
class CurateResult:
    generations: pl.DataFrame
    problems: pl.DataFrame
    """Per-problem stats after decontamination and dedup (with a ``pass_rate`` column)."""
    sft: pl.DataFrame
    rl: pl.DataFrame
    report: DropReport


def curate(frames: Sequence[pl.DataFrame], *, eval_sets: dict[str, list[str]], report: DropReport | None = None,
           rule: DecontamRule = DecontamRule(), dedup_ngram: int = 8, dedup_threshold: float = 0.8,
           min_pass_rate: float = 0.0, max_pass_rate: float = 0.5, max_tokens: int | None = 16384) -> CurateResult:
    """Verify, decontaminate, dedup, band by pass rate, choose the shortest correct trace.

    Pass band (SFT, problems with traces only): keep ``min_pass_rate < pass_rate <= max_pass_rate``.
    Problems without traces go to the RL set only."""
    report = report or DropReport()
    df = verify(pl.concat([f for f in frames if f.height], how="vertical_relaxed")) if frames else pl.DataFrame(schema=SCHEMA)
    report.totals["input_generations"] = int(df["generation"].is_not_null().sum())
    # generations of problems with the same id in several inputs are pooled under that id
    stats = problem_stats(df, max_tokens)
    report.totals["input_problems"] = stats.height
    stats = stats.filter(pl.col("answer").is_not_null())
    # problems with traces first, so dedup keeps the copy that has traces
    stats = stats.with_row_index("_order").sort([pl.col("n_generations") == 0, "_order"]).drop("_order")
    texts = stats["problem"].fill_null("").to_list()

    contam = contamination(texts, eval_sets, rule)
    for name, n in Counter(c for c in contam if c).items():
        report.add("problems", f"contaminated:{name}", n)
    stats = stats.filter(pl.Series([c is None for c in contam]))

    dups = near_duplicates(stats["problem"].fill_null("").to_list(), dedup_ngram, dedup_threshold)
    for kind, n in Counter(d[0] for d in dups if d).items():
        report.add("problems", f"duplicate_{kind}", n)
    stats = stats.filter(pl.Series([d is None for d in dups]))
    report.totals["problems_after_decontam_dedup"] = stats.height

    # SFT: problems with traces, in the pass band, with a correct trace within max_tokens
    traced = stats.filter(pl.col("n_generations") > 0)
    report.add("sft", "no_traces", stats.height - traced.height)
    unsolved = traced.filter(pl.col("pass_rate") <= min_pass_rate)
    easy = traced.filter(pl.col("pass_rate") > max_pass_rate)
    report.add("sft", f"pass_rate<={min_pass_rate:g}", unsolved.height)
    report.add("sft", f"pass_rate>{max_pass_rate:g}", easy.height)
    band = traced.filter((pl.col("pass_rate") > min_pass_rate) & (pl.col("pass_rate") <= max_pass_rate))
    chosen = shortest_correct(df.filter(pl.col("problem_id").is_in(band["problem_id"].implode())), max_tokens)
    report.add("sft", f"no_correct_trace<={max_tokens}_tokens", band.height - chosen.height)
    report.totals["sft_examples"] = chosen.height

    rl = stats.filter(pl.col("answer_int").is_not_null())
    report.add("rl", "non_integer_answer", stats.height - rl.height)
    report.totals["rl_problems"] = rl.height
    return CurateResult(df, stats, chosen, rl, report)
