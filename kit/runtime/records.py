"""Run records: every event of a run appended to ``records.jsonl`` as it happens.

A crashed or killed run keeps everything up to its last event (each line is flushed), which is what
makes a 5-hour submission debuggable and lets evaluation re-use samples instead of re-generating them.

Event types (field ``event``):

* ``run_start`` — the run configuration, profile, model, start-up seconds and where they were counted
  from, the time bank's seconds, sample cap and speed model (:class:`kit.runtime.session.Session`).
* ``budget`` — the time bank's budget for the next problem: deadline seconds, samples, max tokens, skip,
  the throughput scale learnt so far.
* ``sample`` — one finished (or aborted, cancelled) sample: problem_id, sample index, prompt kind,
  sampling params, full text, tokens, prompt tokens, code calls, extracted and normalised answer,
  finish reason, times.
* ``problem`` — one answered problem: its text (``problem``), answer, gold (if known), vote tally, decision
  reason (``cancelled`` when the caller gave up, ``skipped`` without time), totals.
* ``warning`` — something the run survived (a difficulty predictor that did not load, a sandbox restart).
* ``dryrun`` / ``kaggle_call`` / ``kaggle_error`` — the driver's own events; ``run_end`` — summary.

``RECORD_VERSION`` is bumped when a field changes meaning; the reader (:mod:`kit.offline.runs`) rejects
versions it does not know.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

RECORD_VERSION = 1


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
