"""Run records: every event of a run appended to ``records.jsonl`` as it happens, read back with polars.

A crashed or killed run keeps everything up to its last event (each line is flushed), which is what
makes a 5-hour submission debuggable and lets evaluation re-use samples instead of re-generating them.

Event types (field ``event``):

* ``run_start`` — config, profile, engine info.
* ``sample`` — one finished (or aborted) sample: problem_id, sample index, prompt kind, sampling
  params, full text, tokens, code calls, extracted and normalised answer, finish/stop reason, times.
* ``budget`` — (dry-run) the time bank's budget for the next problem: deadline seconds, samples, max tokens.
* ``problem`` — one answered problem: its text (``problem``), answer, gold (if known), vote tally, decision
  reason, totals. Older files without the text stay readable (readers fall back to the problem set).
* ``run_end`` — summary.

``RECORD_VERSION`` is bumped when a field changes meaning; readers reject versions they don't know.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

RECORD_VERSION = 1


class RecordFormatError(ValueError):
    """A records file that cannot be read as this version's run records."""


class RunRecorder:
    """Append-only JSON-lines writer; thread-safe; flushes every event."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        row = {"event": event, "version": RECORD_VERSION, "wall_time": time.time(), **fields}
        line = json.dumps(row, ensure_ascii=False, default=str)
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path, event: str | None = None) -> list[dict]:
    """All events of a records file (optionally of one type), validating the version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run records not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                # a run killed mid-write leaves a partial last line: everything before it is good
                if not line.endswith("\n"):
                    break
                raise RecordFormatError(f"{path}:{lineno}: not JSON") from None
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
    import polars as pl

    rows = read_events(path, "sample")
    if not rows:
        return pl.DataFrame()
    for r in rows:
        r["code_calls"] = len(r.get("code", []))
        r.pop("code", None)
    return pl.DataFrame(rows, infer_schema_length=None)


def problems_frame(path: str | Path):
    """The ``problem`` events as a polars DataFrame (one row per problem)."""
    import polars as pl

    rows = read_events(path, "problem")
    for r in rows:
        r["tally"] = json.dumps(r.get("tally", {}))
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
