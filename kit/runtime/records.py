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

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

RECORD_VERSION = 1
FALLBACK_NAME = "records-fallback.jsonl"
"""Where records go when their own path cannot be written: this name in the working directory."""


class RunRecorder:
    """Append-only JSON-lines writer; thread-safe; flushes every event; **never raises** (docs/reliability.md).

    Records are a debugging aid and the input of every offline tool, never a reason to lose an answer: a
    write that fails (a full disk, a path that became a folder, a file deleted under the run) is retried
    once at a second location — :data:`FALLBACK_NAME` in the working directory — and said so on stderr;
    what still cannot be written is counted (:attr:`failures`) and flagged (:attr:`degraded`), one warning
    line per cause. A path whose file was replaced or deleted is reopened. Text is written as UTF-8 with
    code points UTF-8 cannot hold (a lone surrogate in a problem string) escaped, so one odd character
    never costs a record.
    """

    def __init__(self, path: str | Path, *, fallback_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.fallback = Path(fallback_dir if fallback_dir is not None else os.getcwd()) / FALLBACK_NAME
        self.failures = 0
        """Events that could not be written anywhere."""
        self.degraded: str | None = None
        """Why records are not (all) where they should be; None while they are."""
        self.written_to = self.path
        """The file events are being appended to (the fallback after a failure of ``path``)."""
        self._lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()
        self._fh: Any = None
        try:
            self._fh = self._open(self.path)
        except OSError as exc:
            self._fall_back(f"cannot open {self.path}: {exc}")

    # --- writing ----------------------------------------------------------------------------------

    def write(self, event: str, **fields: Any) -> bool:
        """Append one event; False when it could not be written anywhere (never raises)."""
        try:
            row = {"event": event, "version": RECORD_VERSION, "wall_time": time.time(), **fields}
            line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        except Exception as exc:  # a field that cannot be serialised at all
            return self._failed(f"event {event!r} cannot be serialised ({type(exc).__name__}: {exc})")
        with self._lock:
            if self._closed:
                return False
            if self._fh is not None:
                try:
                    self._ensure_same_file()
                    self._append(line)
                    return True
                except OSError as exc:
                    self._fall_back(f"cannot write {self.written_to}: {exc}")
            if self._fh is not None:
                try:
                    self._append(line)
                    return True
                except OSError as exc:
                    self._close_handle()
                    return self._failed(f"cannot write {self.written_to} either: {exc}")
            return self._failed(self.degraded or "no records file")

    def _append(self, line: str) -> None:
        self._fh.write(line)
        self._fh.flush()

    def _open(self, path: Path) -> Any:
        path.parent.mkdir(parents=True, exist_ok=True)
        # backslashreplace: a code point UTF-8 cannot encode is written as its JSON escape (inside a string)
        return path.open("a", encoding="utf-8", errors="backslashreplace")

    def _ensure_same_file(self) -> None:
        """Reopen the records path when the file behind the open handle is no longer the one at the path
        (deleted, replaced; a folder there raises and sends the records to the fallback)."""
        try:
            same = os.path.samestat(os.fstat(self._fh.fileno()), os.stat(self.written_to))
        except FileNotFoundError:
            same = False
        if not same:
            self._close_handle()
            self._fh = self._open(self.written_to)
            self._warn(f"run records: {self.written_to} was replaced or deleted during the run; reopened")

    def _fall_back(self, why: str) -> None:
        """Switch to the fallback file (once); on failure there too, stop writing."""
        self._close_handle()
        self.degraded = why
        if self.written_to == self.fallback:
            self._fh = None
            return
        try:
            self._fh = self._open(self.fallback)
            self.written_to = self.fallback
            self._warn(f"run records: {why}; writing to {self.fallback} instead")
        except OSError as exc:
            self._fh = None
            self._warn(f"run records: {why}; and cannot open {self.fallback} ({exc}): records are lost")

    def _failed(self, why: str) -> bool:
        self.failures += 1
        self.degraded = self.degraded or why
        self._warn(f"run records: {why}; {self.failures} event(s) not written")
        return False

    def _warn(self, message: str) -> None:
        key = message.split(";")[0]
        if key in self._warned:
            return
        self._warned.add(key)
        with contextlib.suppress(Exception):  # stderr gone too: nothing left to tell
            print(f"WARNING {message}", file=sys.stderr, flush=True)

    # --- closing ------------------------------------------------------------------------------------

    def _close_handle(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_handle()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
