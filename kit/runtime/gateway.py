"""The gateway side of a run: our local gateway (the Kaggle contract, checked strictly) and the serve switch.

* :class:`LocalGateway` implements the gateway contract (docs/design.md "Kaggle gateway"): rows shuffled,
  one length-1 ``pl.Series`` per column, per-call deadlines timed, every returned frame validated,
  ``submission.parquet`` written, a :class:`GatewayReport` (with a score when the CSV has answers).
* :func:`run_gateway` picks Kaggle's server (``serve()`` on a competition rerun), Kaggle's local gateway
  (competition data present), or ours.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from kit.runtime.problems import Problem, default_problems, problems_path
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.run_config import ResolvedConfig

log = logging.getLogger(__name__)


@dataclass
class GatewayRow:
    id: Any
    answer: int | None
    seconds: float
    valid: bool
    error: str | None = None
    gold: int | None = None
    correct: bool | None = None


@dataclass
class GatewayReport:
    rows: list[GatewayRow] = field(default_factory=list)
    total_seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    score: float | None = None
    correct: int = 0
    scored: int = 0
    submission: str | None = None

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, default=str), encoding="utf-8")
        return path


class LocalGateway:
    """Our gateway, to the AIMO2 contract (docs/design.md "Kaggle gateway"), stricter than Kaggle's about what it checks."""

    def __init__(self, source: str | Path | pl.DataFrame, *, profile: str | Profile = "aimo2", seed: int = 0,
                 shuffle: bool = True, per_call_seconds: float | None = None, out_dir: str | Path = ".") -> None:
        self.source = source if isinstance(source, pl.DataFrame) else Path(source)
        self.profile = get_profile(profile)
        self.seed = seed
        self.shuffle = shuffle
        self.per_call_seconds = per_call_seconds if per_call_seconds is not None else self.profile.per_call_seconds
        self.out_dir = Path(out_dir)

    def rows(self) -> Any:
        """The rows to serve (a CSV as polars reads it, or the frame given), shuffled with the seed."""

        df = self.source if isinstance(self.source, pl.DataFrame) else pl.read_csv(self.source, encoding="utf8-lossy")
        if not self.shuffle:
            return df
        order = list(range(df.height))
        random.Random(self.seed).shuffle(order)
        return df[order]

    def run(self, predict: Callable[..., Any], on_row: Callable[[GatewayRow], None] | None = None) -> GatewayReport:
        """Serve every row to ``predict`` in turn, check each reply, write ``submission.parquet``;
        ``on_row`` sees each row's verdict as soon as it is known (the dry-run's progress lines)."""

        if getattr(predict, "__name__", None) != "predict":
            raise ValueError(f"the gateway looks the listener up by name: it must be 'predict', "
                             f"got {getattr(predict, '__name__', None)!r}")
        df = self.rows()
        report = GatewayReport()
        has_gold = "answer" in df.columns
        t_run = time.monotonic()
        ids: list[Any] = []
        answers: list[int] = []
        for i in range(df.height):
            row = df.slice(i, 1)
            in_id = row["id"][0]
            gold = self.profile.to_answer(None if row["answer"][0] is None else str(row["answer"][0])) \
                if has_gold else None
            errors: list[str] = []
            t0 = time.monotonic()
            ret: Any = None
            try:
                ret = predict(*[row[c] for c in row.columns])
            except Exception as exc:
                errors.append(f"predict raised {type(exc).__name__}: {exc}")
            seconds = time.monotonic() - t0
            if i > 0 and self.per_call_seconds is not None and seconds > self.per_call_seconds:
                errors.append(f"call took {seconds:.1f} s > per-call limit {self.per_call_seconds:.0f} s")
            answer = None if errors and ret is None else self._validate(ret, in_id, errors)
            prefix = f"call {i + 1} (id {in_id!r}): "
            report.violations += [prefix + e for e in errors]
            row_answer = answer if answer is not None else self.profile.fallback_answer
            ids.append(in_id)
            answers.append(row_answer)
            correct = None if gold is None else (not errors and answer == gold)
            report.rows.append(GatewayRow(id=in_id, answer=answer, seconds=round(seconds, 4), valid=not errors,
                                          error="; ".join(errors) or None, gold=gold, correct=correct))
            if on_row is not None:
                on_row(report.rows[-1])
        report.total_seconds = round(time.monotonic() - t_run, 4)
        if has_gold:
            report.scored = sum(r.gold is not None for r in report.rows)
            report.correct = sum(bool(r.correct) for r in report.rows)
            report.score = report.correct / report.scored if report.scored else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / "submission.parquet"
        pl.DataFrame({"id": pl.Series("id", ids, dtype=df["id"].dtype),
                      "answer": pl.Series("answer", answers, dtype=pl.Int64)}).write_parquet(out)
        report.submission = str(out)
        return report

    def _validate(self, ret: Any, in_id: Any, errors: list[str]) -> int | None:
        """The answer if ``ret`` is a valid reply for ``in_id``, else None with ``errors`` filled."""

        if not isinstance(ret, pl.DataFrame):
            errors.append(f"returned {type(ret).__name__}, not a polars DataFrame")
            return None
        if ret.columns != ["id", "answer"]:
            if sorted(ret.columns) == ["answer", "id"]:
                errors.append(f"columns in order {ret.columns}, expected ['id', 'answer']")
            else:
                errors.append(f"columns {ret.columns}, expected exactly ['id', 'answer']")
        if ret.height != 1:
            errors.append(f"{ret.height} rows, expected 1")
        if ret.height == 0 or "id" not in ret.columns or "answer" not in ret.columns:
            return None
        out_id = ret["id"][0]
        if type(out_id) is not type(in_id) or out_id != in_id:
            errors.append(f"returned id {out_id!r} ({type(out_id).__name__}) != input id {in_id!r} "
                          f"({type(in_id).__name__})")
        dtype = ret["answer"].dtype
        value = ret["answer"][0]
        if not dtype.is_integer():
            errors.append(f"answer dtype {dtype} is not an integer ({value!r})")
            return None
        if value is None:
            errors.append("answer is null")
            return None
        if not self.profile.in_range(int(value)):
            errors.append(f"answer {value} outside [{self.profile.answer_min}, {self.profile.answer_max}]")
            return None
        return None if errors else int(value)


def problems_frame(problems: Sequence[Problem]) -> pl.DataFrame:
    """Problems as the gateway's CSV would hold them: ``id``, ``problem`` and, when any is known, ``answer``."""
    columns: dict[str, pl.Series] = {"id": pl.Series("id", [p.id for p in problems], dtype=pl.String),
                                     "problem": pl.Series("problem", [p.problem for p in problems], dtype=pl.String)}
    if any(p.answer is not None for p in problems):
        columns["answer"] = pl.Series("answer", [p.answer for p in problems], dtype=pl.String)
    return pl.DataFrame(columns)


# ----------------------------------------------------------------------------------------------------
# Serving


class GatewayImportError(ImportError):
    """The competition's gateway module cannot be imported."""


def _gateway_class(profile: Profile, competition_dir: Path) -> type:
    if str(competition_dir) not in sys.path:
        sys.path.insert(0, str(competition_dir))
    try:
        module = importlib.import_module(profile.gateway_module)
        return getattr(module, profile.gateway_class)
    except (ImportError, AttributeError) as exc:
        raise GatewayImportError(
            f"cannot import {profile.gateway_module}.{profile.gateway_class} for profile {profile.name!r} "
            f"from {competition_dir} ({type(exc).__name__}: {exc}); attach the competition data "
            f"(it ships kaggle_evaluation/) or set AIMO_COMPETITION_DIR") from exc


def kaggle_test_csv(competition_dir: str | Path | None) -> Path | None:
    """``test.csv`` of a competition folder that also ships Kaggle's ``kaggle_evaluation/`` (its local gateway
    then serves the run), else None."""
    if not competition_dir:
        return None
    comp = Path(competition_dir)
    test_csv = comp / "test.csv"
    return test_csv if (comp / "kaggle_evaluation").is_dir() and test_csv.is_file() else None


def run_gateway(predict: Callable[..., Any], resolved: ResolvedConfig) -> Path:
    """Serve ``predict`` the right way for where we run; returns the ``submission.parquet`` path."""
    config, profile = resolved.config, resolved.profile
    comp = config.resolved_competition_dir()
    if os.environ.get("KAGGLE_IS_COMPETITION_RERUN"):
        cls = _gateway_class(profile, comp)
        log.info("competition rerun: serving %s", profile.gateway_class)
        cls(predict).serve()
        return Path.cwd() / "submission.parquet"
    test_csv = kaggle_test_csv(comp)
    if test_csv is not None:
        cls = _gateway_class(profile, comp)
        log.info("Kaggle local gateway on %s", test_csv)
        cls(predict).run_local_gateway((str(test_csv),))
        return Path.cwd() / "submission.parquet"
    csv_path = Path(os.environ["AIMO_TEST_CSV"]) if os.environ.get("AIMO_TEST_CSV") else problems_path(default_problems(profile.name))
    log.info("our local gateway on %s", csv_path)
    report = LocalGateway(csv_path, profile=profile).run(predict)
    try:
        report.to_json(Path(config.records_dir) / "gateway_report.json")
    except OSError as exc:  # pragma: no cover
        log.warning("cannot write the gateway report: %s", exc)
    for v in report.violations:
        log.error("gateway violation: %s", v)
    return Path(report.submission or "submission.parquet")
