"""Problem sets: the competition CSVs and our jsonl files, read with polars into one shape.

Accepted: CSV with ``id`` and ``problem`` columns (``answer`` optional) as Kaggle ships them, and jsonl
with ``id``/``problem``/``answer`` (the bundled benchmark files in ``kit/runtime/resources/problems``).
Text that is not valid UTF-8 is decoded with replacement characters rather than rejected: a mangled
character in a problem must not stop a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kit.runtime.resources import resource_path

BUNDLED_PROBLEMS = {
    "aimo2_reference": "aimo2_reference.csv",
    "aimo3_reference": "aimo3_reference.csv",
    "aimo1_train": "aimo1_train.csv",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "aime_1983_2023": "aime_1983_2023.jsonl",
    "amc23": "amc23.jsonl",
    "math500": "math500.jsonl",
}
DEFAULT_PROBLEMS = "aimo2_reference"


def default_problems(profile: str) -> str:
    """The bundled reference set of a competition profile (``aimo3`` → ``aimo3_reference``), else the AIMO2 one."""
    name = f"{profile}_reference"
    return name if name in BUNDLED_PROBLEMS else DEFAULT_PROBLEMS


class ProblemFileError(ValueError):
    """A problem file that cannot be read (missing columns, bad format)."""


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str | None = None


def problems_path(source: str | Path | None) -> Path:
    """A bundled set name (see ``BUNDLED_PROBLEMS``) or a path."""
    if source is None:
        source = DEFAULT_PROBLEMS
    if isinstance(source, str) and source in BUNDLED_PROBLEMS:
        return resource_path("problems", BUNDLED_PROBLEMS[source])
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"problem file not found: {path} (or use a bundled set: {', '.join(sorted(BUNDLED_PROBLEMS))})")
    return path


def load_problems(source: str | Path | None = None) -> list[Problem]:
    """Problems of a CSV/jsonl file or bundled set, in file order."""

    path = problems_path(source)
    try:
        if path.suffix == ".csv":
            df = pl.read_csv(path, encoding="utf8-lossy", infer_schema=False)
        elif path.suffix in (".jsonl", ".json"):
            raw = path.read_bytes().decode("utf-8", errors="replace")
            df = pl.read_ndjson(raw.encode("utf-8"), infer_schema_length=None)
        else:
            raise ProblemFileError(f"{path}: unsupported format {path.suffix!r} (use .csv or .jsonl)")
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError) as exc:
        raise ProblemFileError(f"{path}: could not be parsed ({exc})") from None
    missing = [c for c in ("id", "problem") if c not in df.columns]
    if missing:
        raise ProblemFileError(f"{path}: missing column(s) {missing}; found {df.columns}")
    answers = df["answer"].cast(pl.String) if "answer" in df.columns else [None] * df.height
    problems = [
        Problem(id=str(i), problem="" if p is None else str(p), answer=None if a is None else str(a))
        for i, p, a in zip(df["id"].cast(pl.String), df["problem"].cast(pl.String), answers, strict=True)
    ]
    if not problems:
        raise ProblemFileError(f"{path}: no problems")
    return problems
