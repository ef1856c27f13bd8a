"""Other harnesses' attempt logs as runs: Harmony token logs and attempt tables (docs/evaluation.md "Bring
your own logs").

Every AIMO3 team logged its attempts, in one of two shapes, and a team must be able to evaluate, simulate
and tune on its own model's attempts without re-generating them:

* **Harmony token logs** (``.jsonl``/``.jsonl.gz``), one attempt a line: ``{"problem_id", "problem", "gold":
  int|null, "completion_ids": [...]}``, optionally ``seconds`` and ``entropy_mean``/``entropy_tail``
  (``entropy`` is read as the mean). ``completion_ids`` are what the model and the tool wrote after the
  rendered prompt — assistant turns, ``<|call|>``, the python tool's messages, the next
  ``<|start|>assistant`` — as AIMO3 harnesses save them; the last turn may end at a box without
  ``<|return|>``. They are read by the solver's own reader
  (:func:`kit.runtime.protocols.harmony.read_completion`): answers, token counts, python calls and errors
  mean the same in a log as in a live attempt.
* **Attempt tables** (``.csv``/``.parquet``), one attempt a row: ``problem_id``, ``answer``, ``gold``,
  ``tokens``; optionally ``seconds``, ``problem``, ``entropy`` (or ``entropy_mean``/``entropy_tail``),
  ``python_calls``, ``python_errors``, ``correct`` (the harness's own verdict).

``columns`` (``--map OLD=NEW,...`` on the command line) renames fields on the way in, e.g.
``{"ground_truth": "gold", "total_tokens": "tokens", "time": "seconds"}``. A line or row that does not fit
is one :class:`AttemptLogError` naming the file, the line (or row) and the field: a silently skipped
attempt would bias every figure computed from the log.

This module reads the formats into :class:`LoggedAttempt` rows; :func:`kit.offline.runs.load_pool_run`
makes them a run, like every other pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kit.runtime.jsonl import json_lines
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.protocols.harmony import HarmonyReader, harmony_encoding, read_completion, without_header

TABLE_SUFFIXES = (".csv", ".parquet")
LOG_SUFFIXES = (".jsonl", ".jsonl.gz")
TABLE_REQUIRED = ("problem_id", "answer", "gold", "tokens")
LOG_REQUIRED = ("problem_id", "problem", "gold", "completion_ids")


class AttemptLogError(ValueError):
    """An attempt log line or table row that does not fit its format."""


def parse_column_map(text: str | None) -> dict[str, str]:
    """``"ground_truth=gold,total_tokens=tokens"`` → ``{"ground_truth": "gold", "total_tokens": "tokens"}``."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        old, sep, new = part.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"--map: {part.strip()!r} is not OLD=NEW (e.g. --map ground_truth=gold,total_tokens=tokens)")
        out[old.strip()] = new.strip()
    return out


def _name(path: Path) -> str:
    return path.name.removesuffix(".gz")


def is_attempt_log(path: str | Path, columns: Mapping[str, str] | None = None) -> bool:
    """Whether ``path`` is an attempt table or a Harmony token log (not a trace pool, not run records)."""
    p = Path(path)
    if p.is_file() and p.suffix in TABLE_SUFFIXES:
        return True
    if not p.is_file() or not _name(p).endswith(".jsonl"):
        return False
    for _, row in json_lines(p, AttemptLogError):
        row = _renamed(row, columns or {})
        return "completion_ids" in row
    return False


def _renamed(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    return {columns.get(k, k): v for k, v in row.items()}


# --- field checks --------------------------------------------------------------------------------------


def _int(value: Any, where: str, name: str, *, optional: bool = False, minimum: int | None = None) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        if optional:
            return None
        raise AttemptLogError(f"{where}: field {name!r} is missing")
    if isinstance(value, bool):
        raise AttemptLogError(f"{where}: field {name!r} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or (minimum is not None and value < minimum):
        need = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise AttemptLogError(f"{where}: field {name!r} must be {need}, got {value!r:.60}")
    return value


def _number(value: Any, where: str, name: str) -> float | None:
    """An optional non-negative finite number (seconds, entropies)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise AttemptLogError(f"{where}: field {name!r} must be a number, got {value!r:.60}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
        raise AttemptLogError(f"{where}: field {name!r} must be a non-negative number, got {value!r:.60}")
    return float(value)


def _gold(value: Any, where: str, profile: Profile) -> int | None:
    """The gold answer as the profile's integer (None: unscored). Integers, or text an integer reads from."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise AttemptLogError(f"{where}: field 'gold' must be an integer or null, got {value!r:.60}")
    return profile.to_answer(str(int(value)) if isinstance(value, float) and value.is_integer() else str(value))


def _problem_id(value: Any, where: str) -> str:
    if value is None or isinstance(value, (bool, list, dict)) or str(value).strip() == "":
        raise AttemptLogError(f"{where}: field 'problem_id' must be a non-empty string or integer, got {value!r:.60}")
    return str(value)


def _entropies(row: Mapping[str, Any], where: str) -> tuple[float | None, float | None]:
    mean = _number(row.get("entropy_mean", row.get("entropy")), where, "entropy_mean" if "entropy_mean" in row
                   else "entropy")
    return mean, _number(row.get("entropy_tail"), where, "entropy_tail")


@dataclass(frozen=True)
class LoggedAttempt:
    """One attempt of a log, read (answers normalised for the profile)."""

    problem_id: str
    problem: str
    gold: int | None
    answer: int | None
    tokens: int
    finish_reason: str
    text: str = ""
    """The ids decoded, special tokens shown (Harmony logs); "" for a table row."""
    seconds: float | None = None
    python_calls: int = 0
    python_errors: int = 0
    entropy_mean: float | None = None
    entropy_tail: float | None = None
    recorded_correct: bool | None = None
    ids: np.ndarray | None = None
    """The completion ids (Harmony logs): budget cuts re-read them."""

    def answers_at(self, budgets: Sequence[int], profile: Profile) -> list[int | None]:
        """The answer this attempt would have given if cut at each budget (ascending): re-read from its
        ids by the solver's reader in one pass (Harmony logs), or — a table keeps no text — its answer when
        it fits the budget, none when it does not."""
        if self.ids is None:
            return [self.answer if self.tokens <= b else None for b in budgets]
        out: list[int | None] = []
        reader = HarmonyReader()
        fed = 0
        for b in budgets:
            if b >= len(self.ids):
                out.append(self.answer)
                continue
            reader.feed(self.ids[fed:b].tolist())
            fed = b
            raw = reader.answer()
            out.append(None if raw is None else profile.to_answer(raw))
        return out


def read_harmony_log(path: str | Path, *, profile: Profile | str | None = None,
                     columns: Mapping[str, str] | None = None) -> list[LoggedAttempt]:
    """Every attempt of a Harmony token log, read by the solver's reader (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Harmony token log not found: {path}")
    prof = get_profile(profile)
    enc = harmony_encoding()
    columns = columns or {}
    golds: dict[str, tuple[int | None, int]] = {}
    cache: dict[str, int | None] = {}
    attempts: list[LoggedAttempt] = []
    for lineno, raw in json_lines(path, AttemptLogError):
        where = f"{path}:{lineno}"
        row = _renamed(raw, columns)
        missing = [f for f in LOG_REQUIRED if f not in row]
        if missing:
            raise AttemptLogError(f"{where}: missing field(s) {missing} (a Harmony token log line has "
                                  f"{', '.join(LOG_REQUIRED)}; rename others with --map OLD=NEW)")
        pid = _problem_id(row["problem_id"], where)
        problem = row["problem"]
        if not isinstance(problem, str):
            raise AttemptLogError(f"{where}: field 'problem' must be a string, got {problem!r:.60}")
        ids = row["completion_ids"]
        bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < 2**31][:1] \
            if isinstance(ids, list) else [ids]
        if bad:
            raise AttemptLogError(f"{where}: field 'completion_ids' must be a list of token ids, got {bad[0]!r:.60}")
        gold = _same_gold(golds, pid, _gold(row["gold"], where, prof), row["gold"], where, "field")
        ids = without_header(ids)
        reading = read_completion(ids, enc)
        if reading.answer is not None and reading.answer not in cache:
            cache[reading.answer] = prof.to_answer(reading.answer)
        mean, tail = _entropies(row, where)
        attempts.append(LoggedAttempt(
            pid, problem, gold, None if reading.answer is None else cache[reading.answer], max(reading.tokens, 1),
            reading.finish_reason, reading.text, _number(row.get("seconds"), where, "seconds"),
            reading.python_calls, reading.python_errors, mean, tail, ids=np.asarray(ids, dtype=np.int32)))
    if not attempts:
        raise AttemptLogError(f"{path}: no attempts")
    return attempts


def _same_gold(golds: dict[str, tuple[int | None, int]], pid: str, gold: int | None, raw: Any, where: str,
               kind: str) -> int | None:
    """The problem's gold, refusing a line that disagrees with an earlier one."""
    if pid in golds and golds[pid][0] != gold:
        raise AttemptLogError(f"{where}: {kind} 'gold' is {raw!r} for problem {pid}, an earlier one gave "
                              f"{golds[pid][0]!r}")
    golds.setdefault(pid, (gold, 0))
    return gold


# --- attempt tables ---------------------------------------------------------------------------------------


def _read_table(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise AttemptLogError(f"{path}: cannot be read as {path.suffix[1:]} ({str(exc).splitlines()[0]})") from None
    return frame.to_dicts()


_TRUTH = {"true": True, "false": False, "1": True, "0": False, "": None}


def read_attempt_table(path: str | Path, *, profile: Profile | str | None = None,
                       columns: Mapping[str, str] | None = None) -> list[LoggedAttempt]:
    """Every row of an attempt table (CSV or parquet; see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attempt table not found: {path}")
    prof = get_profile(profile)
    columns = columns or {}
    rows = [_renamed(r, columns) for r in _read_table(path)]
    if not rows:
        raise AttemptLogError(f"{path}: no attempts")
    missing = [c for c in TABLE_REQUIRED if c not in rows[0]]
    if missing:
        raise AttemptLogError(f"{path}: missing column(s) {missing}; found {sorted(rows[0])} (rename with --map "
                              "OLD=NEW, e.g. --map ground_truth=gold,total_tokens=tokens)")
    golds: dict[str, tuple[int | None, int]] = {}
    attempts = []
    for k, row in enumerate(rows, 1):
        where = f"{path}: row {k}"
        pid = _problem_id(row["problem_id"], where)
        gold = _same_gold(golds, pid, _gold(row["gold"], where, prof), row["gold"], where, "column")
        answer = row["answer"]
        if isinstance(answer, (list, dict, bool)):
            raise AttemptLogError(f"{where}: column 'answer' must be an integer, text or empty, got {answer!r:.60}")
        value = None if answer is None or answer == "" or (isinstance(answer, float) and math.isnan(answer)) else \
            prof.to_answer(str(int(answer)) if isinstance(answer, float) and answer.is_integer() else str(answer))
        tokens = _int(row["tokens"], where, "tokens", minimum=0)
        calls = _int(row.get("python_calls"), where, "python_calls", optional=True, minimum=0) or 0
        errors = _int(row.get("python_errors"), where, "python_errors", optional=True, minimum=0) or 0
        correct = row.get("correct")
        if isinstance(correct, str):
            correct = _TRUTH.get(correct.strip().lower(), correct)
        if correct is not None and not isinstance(correct, bool):
            raise AttemptLogError(f"{where}: column 'correct' must be true/false, got {correct!r:.60}")
        mean, tail = _entropies(row, where)
        problem = row.get("problem")
        attempts.append(LoggedAttempt(pid, problem if isinstance(problem, str) else "", gold, value,
                                      max(tokens or 0, 1), "stop", "", _number(row.get("seconds"), where, "seconds"),
                                      calls, errors, mean, tail, correct))
    return attempts


def read_attempt_log(path: str | Path, *, profile: Profile | str | None = None,
                     columns: Mapping[str, str] | None = None) -> list[LoggedAttempt]:
    """An attempt table (``.csv``/``.parquet``) or a Harmony token log (``.jsonl``/``.jsonl.gz``)."""
    if Path(path).suffix in TABLE_SUFFIXES:
        return read_attempt_table(path, profile=profile, columns=columns)
    return read_harmony_log(path, profile=profile, columns=columns)
