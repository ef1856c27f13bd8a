"""The Kaggle side of a submission: ``predict`` for the gateway.

:func:`build_predict` turns a :class:`~kit.runtime.run_config.ResolvedConfig` into the function the
Kaggle gateway calls (``predict.__name__ == "predict"``). The local dry-run (:mod:`kit.runtime.dryrun`)
drives the same ``predict`` through the local gateway: one driver, the same timeouts and abandon path. The :class:`~kit.runtime.session.Session`
(engine, sandbox, solver, time bank) opens lazily on the first call, which has no deadline; all async work
runs on one persistent event loop in a background thread (vLLM's async engine needs one loop for its whole
life) and ``predict`` waits for a problem at most until its deadline + a margin, never past the per-call
limit. ``predict`` never raises: any failure (engine start, solver, timeout, bad input) is logged, written
to the run records, and answered with the profile's fallback answer (or, after a timeout, with what the
finished samples said). An engine that failed to start is not retried.

The run's clock starts at the notebook's first cell (``$AIMO_KIT_RUN_START``, set by the built notebook),
else when this module is imported: the minutes of the offline install are charged to the time bank.

The local gateway and the serve switch are :mod:`kit.runtime.gateway`'s (re-exported here).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kit.runtime.engines.base import EngineFactory
from kit.runtime.gateway import GatewayImportError, GatewayReport, GatewayRow, LocalGateway, run_gateway
from kit.runtime.records import RunRecorder
from kit.runtime.results import ProblemResult
from kit.runtime.run_config import ResolvedConfig, SubmissionConfig, run_start
from kit.runtime.schedule import Policy
from kit.runtime.session import Log, Session

log = logging.getLogger(__name__)

PROCESS_START = time.time()
"""Wall-clock time this module was imported: the run's start when the notebook did not set one."""
CANCEL_GRACE_S = 10.0
"""After a timeout, how long ``predict`` waits for the cancelled solve to write its records."""


class _LoopThread:
    """One asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="aimo-kaggle-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Cancel what still runs on the loop (bounded), then stop it."""
        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.submit(_cancel_others()).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


async def _cancel_others() -> None:
    """Cancel every other task of the running loop and let them finish their clean-up."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in others:
        t.cancel()
    if others:
        await asyncio.wait(others, timeout=4)


async def _signalling(coro: Coroutine[Any, Any, Any], finished: threading.Event) -> Any:
    """Run ``coro``; set ``finished`` once it is really over (after its cancellation clean-up, too)."""
    try:
        return await coro
    finally:
        finished.set()


def _engine_log(message: str) -> None:
    log.info("engine: %s", message)


@dataclass(frozen=True)
class CallReport:
    """One answered problem as ``predict`` decided it (the dry-run prints it beside the gateway's row)."""

    problem_id: str
    answer: int
    how: str
    """How the answer was decided: the solver's reason, or why the fallback or the timeout vote answered."""
    seconds: float
    result: ProblemResult | None
    """The solve's result (also a cancelled one's, after a timeout); None when no solve ran."""


class _Runner:
    """State behind one ``predict``: the lazily opened session, failures remembered, records."""

    def __init__(self, resolved: ResolvedConfig, *, engine_factory: EngineFactory | None,
                 started_at: float, started_from: str, n_problems: int | None = None,
                 policy: Policy | None = None, log: Log | None = None) -> None:
        self.resolved = resolved
        self.config = resolved.config
        self.profile = resolved.profile
        self.engine_factory = engine_factory
        self.started_at = started_at
        self.started_from = started_from
        self.n_problems = n_problems
        self.policy = policy
        self.log: Log = log or _engine_log
        self.last_call: CallReport | None = None
        self.restore_signal: Callable[[], None] | None = None
        self.lock = threading.Lock()
        self.loop: _LoopThread | None = None
        self.session: Session | None = None
        self.start_error: str | None = None
        self.start_exception: BaseException | None = None
        """Why the session did not open (the dry-run raises it: a rehearsal stops where ``predict`` answers
        the fallback)."""
        self.calls = 0
        self.closed = False
        self.in_flight: tuple[concurrent.futures.Future, threading.Event, str] | None = None
        """The solve ``predict`` is waiting for (its future, its finished flag, the problem id)."""
        # never raises: an unwritable records path falls back to the working directory (docs/reliability.md)
        self.recorder: RunRecorder | None = RunRecorder(Path(self.config.records_dir) / "records.jsonl")

    # --- records ------------------------------------------------------------------------------

    def record(self, event: str, **fields: Any) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.write(event, **fields)
        except Exception as exc:  # pragma: no cover - disk full etc.
            log.error("cannot write run record: %s", exc)

    def failure(self, what: str, problem_id: Any, exc: BaseException | str) -> None:
        if isinstance(exc, BaseException):
            message = f"{type(exc).__name__}: {exc}"
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8))
        else:
            message, detail = exc, None
        log.error("predict %s (problem %r): %s", what, problem_id, message)
        self.record("kaggle_error", what=what, problem_id=str(problem_id), error=message, detail=detail)

    # --- start-up ------------------------------------------------------------------------------

    def ensure_started(self, problem_id: Any) -> bool:
        """Open the session once; False if it failed (now or on an earlier call)."""
        if self.session is not None:
            return True
        if self.start_error is not None:
            return False
        try:
            if self.loop is None:
                self.loop = _LoopThread()
            self.session = self.loop.submit(Session.open(
                self.resolved, engine_factory=self.engine_factory, recorder=self.recorder,
                started_at=self.started_at, started_from=self.started_from, strict=False,
                n_problems=self.n_problems, policy=self.policy, log=self.log)).result()
            bank = self.session.bank.state
            log.info("predict ready: %s, start-up %.1f s (counted from %s), %.0f s left in the bank",
                     self.session.model, self.session.startup_seconds, self.started_from, bank.end - bank.start)
            return True
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.start_error = f"{type(exc).__name__}: {exc}"
            self.start_exception = exc
            self.failure("engine start failed; every call answers the fallback", problem_id, exc)
            return False

    # --- one call ------------------------------------------------------------------------------

    def _wait_seconds(self, deadline: float, call_start: float, first: bool) -> float:
        """How long to wait for the solve: its deadline + the margin, within the per-call limit."""
        assert self.session is not None
        margin = self.config.call_margin_seconds
        wait = max(deadline - self.session.engine.clock.now(), 0.0) + margin
        per_call = self.profile.per_call_seconds
        if per_call is not None and not first:
            wait = min(wait, per_call - margin - (time.monotonic() - call_start))
        return max(wait, 0.5)

    def answer(self, problem_id: Any, problem: Any, call_start: float) -> tuple[int, str]:
        """(answer, how it was decided); never raises."""
        fb = self.profile.fallback_answer
        first = self.calls == 0
        self.calls += 1
        if not self.ensure_started(problem_id):
            return fb, f"fallback: engine not started ({self.start_error})"
        session, loop = self.session, self.loop
        assert session is not None and loop is not None
        pid = str(problem_id)
        try:
            budget = session.plan(pid, problem)
        except Exception as exc:
            self.failure("time bank failed", problem_id, exc)
            return fb, "fallback: time bank error"
        finished = threading.Event()
        fut = loop.submit(_signalling(session.answer(pid, problem, budget=budget), finished))
        self.in_flight = (fut, finished, pid)
        try:
            result = fut.result(timeout=self._wait_seconds(budget.deadline, call_start, first))
        except concurrent.futures.TimeoutError:
            return self._abandon(fut, finished, pid, self._grace_seconds(call_start, first))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.failure("solver failed", problem_id, exc)
            return fb, "fallback: solver error"
        finally:
            self.in_flight = None
        return self._checked(result, problem_id)

    def _grace_seconds(self, call_start: float, first: bool) -> float:
        """How long a cancelled solve may take to record itself: ``CANCEL_GRACE_S``, within half the margin
        that :meth:`_wait_seconds` left of the per-call limit."""
        per_call = self.profile.per_call_seconds
        if per_call is None or first:
            return CANCEL_GRACE_S
        left = per_call - (time.monotonic() - call_start) - self.config.call_margin_seconds / 2
        return min(CANCEL_GRACE_S, max(left, 0.0))

    def _abandon(self, fut: concurrent.futures.Future, finished: threading.Event, pid: str,
                 grace: float) -> tuple[int, str]:
        """A solve past its deadline + margin: cancel it, let it record what it has (within ``grace``), and
        answer with the finished samples' vote if there is one."""
        fut.cancel()
        finished.wait(timeout=grace)
        self.failure("timed out", pid, "no result by the deadline + margin; solve cancelled")
        last = self.session.last if self.session is not None else None
        if last is not None and last.problem_id == pid and last.samples_finished:
            return self._checked(last, pid, how="timeout: finished samples' vote")
        return self.profile.fallback_answer, "fallback: timeout"

    def _checked(self, result: Any, problem_id: Any, how: str | None = None) -> tuple[int, str]:
        answer = result.answer
        if not isinstance(answer, int) or isinstance(answer, bool) or not self.profile.in_range(answer):
            self.failure("solver answer out of range", problem_id, f"solver returned {answer!r}")
            return self.profile.fallback_answer, "fallback: bad solver answer"
        if result.error and how is None and result.reason != "skipped":
            first_line = result.error.split("\n")[0]
            self.record("kaggle_error", what="solver fallback", problem_id=str(problem_id), error=first_line)
            log.warning("problem %r answered with the fallback: %s", problem_id, first_line)
        return answer, how or result.reason

    # --- shutdown ------------------------------------------------------------------------------

    def terminate(self, signum: int) -> None:
        """The process is being stopped (SIGTERM: Kaggle's limit, a user's kill): record what the run has —
        the in-flight problem's samples and its problem event (its solve is cancelled, which records them),
        ``run_end`` — and kill the sandbox's processes, within a few seconds. Runs in the signal handler,
        while ``predict`` may hold the lock: it takes none."""
        flight = self.in_flight
        if flight is not None:
            fut, finished, pid = flight
            fut.cancel()
            finished.wait(timeout=CANCEL_GRACE_S / 2)
            self.record("kaggle_error", what="terminated", problem_id=pid,
                        error=f"signal {signum} during the solve: cancelled, its samples recorded")
        session = self.session
        if session is not None and session.sandbox is not None:
            with contextlib.suppress(Exception):
                session.sandbox.shutdown()
        self.close(reason=f"signal {signum}", engine_timeout=5.0)

    def close(self, reason: str = "closed", engine_timeout: float = 60.0, **fields: Any) -> None:
        """Close the session and the loop and write ``run_end`` (with ``fields``); idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.restore_signal is not None:
            self.restore_signal()
        if self.loop is not None and self.session is not None:
            try:
                self.loop.submit(self.session.close()).result(timeout=engine_timeout)
            except Exception as exc:
                log.warning("session close failed: %s", exc)
        if self.loop is not None:
            self.loop.stop()
        rec = self.recorder
        self.record("run_end", kind="kaggle", calls=self.calls, reason=reason,
                    records_degraded=None if rec is None else rec.degraded,
                    records_lost=0 if rec is None else rec.failures, **fields)
        if rec is not None:
            rec.close()


def _values(value: Any) -> list[Any]:
    """Every value of a Series / column / list, or the value itself as one."""
    if isinstance(value, pl.Series):
        return value.to_list()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _parse_call(args: tuple, kwargs: dict) -> tuple[Any, list[tuple[Any, Any]]]:
    """(ids as given — a Series or None —, [(id, problem) of every row]) from the gateway's call shapes: one
    DataFrame, or the columns as Series / values, positionally or by name. The gateway sends one row; a
    batch of several is answered row by row, never cut to its first (docs/reliability.md)."""
    if len(args) == 1 and isinstance(args[0], pl.DataFrame):
        df = args[0]
        ids = df["id"] if "id" in df.columns else None
        problems = df["problem"].to_list() if "problem" in df.columns else [None] * df.height
        id_values = ids.to_list() if ids is not None else [None] * df.height
        return ids, list(zip(id_values, problems, strict=True))
    values = dict(kwargs)
    names = ["id", "problem", "answer"]
    for i, a in enumerate(args):
        name = a.name if isinstance(a, pl.Series) and a.name in names else (names[i] if i < len(names) else f"_{i}")
        values.setdefault(name, a)
    ids = values.get("id")
    id_values, problems = _values(ids), _values(values.get("problem"))
    n = max(len(id_values), len(problems))
    if len(id_values) != n or len(problems) != n:
        raise ValueError(f"{len(id_values)} id(s) for {len(problems)} problem(s)")
    return (ids if isinstance(ids, pl.Series) else None), list(zip(id_values, problems, strict=True))


def _frame(ids: Any, rows: list[tuple[Any, Any]], answers: list[int]) -> Any:
    """The reply the gateway contract asks for: ``pl.DataFrame({"id": id_, "answer": int})``, one row per
    row asked, the ids echoed exactly as given."""
    if isinstance(ids, pl.Series) and len(ids) == len(rows):
        id_col = ids.rename("id")
    else:
        id_col = pl.Series("id", [i for i, _ in rows])
    return pl.DataFrame({"id": id_col, "answer": pl.Series("answer", [int(a) for a in answers], dtype=pl.Int64)})


def build_predict(resolved: ResolvedConfig, *, engine_factory: EngineFactory | None = None,
                  started_at: float | None = None, n_problems: int | None = None, policy: Policy | None = None,
                  engine_log: Log | None = None) -> Callable[..., Any]:
    """The gateway's ``predict`` for the run ``resolved`` (see the module docstring). Never raises.

    ``engine_factory`` (a callable returning an Engine or an awaitable of one, called on the loop thread)
    starts an engine other than the configured vLLM one (replay: ``kit.sim.replay.engine_factory(resolved)``);
    ``started_at`` (``time.time()``) replaces the run's start (default: ``$AIMO_KIT_RUN_START``, else the
    import of this module); ``n_problems`` tells the time bank how many problems come (default: the
    profile's); ``policy`` is a time policy already loaded (the dry-run loads it strictly first); ``engine_log``
    receives the engine's start-up lines (default: this module's logger).
    The returned function has ``.close()`` (session, loop, records), ``.start()`` (open the session now;
    whether it opened) and ``.runner``.
    """
    warning = None
    if started_at is None:
        started_at, started_from, warning = run_start(PROCESS_START)
    else:
        started_from = "build_predict(started_at=...)"
    runner = _Runner(resolved, engine_factory=engine_factory, started_at=started_at, started_from=started_from,
                     n_problems=n_problems, policy=policy, log=engine_log)
    if warning is not None:
        runner.record("warning", what="run start", error=warning)

    def predict(*args: Any, **kwargs: Any) -> Any:
        call_start = time.monotonic()
        fb = runner.profile.fallback_answer
        ids: Any = None
        rows: list[tuple[Any, Any]] = []
        try:
            ids, rows = _parse_call(args, kwargs)
        except Exception as exc:
            runner.failure("bad input", None, exc)
        if len(rows) > 1:
            runner.record("kaggle_error", what="batch", problem_id=str(rows[0][0]),
                          error=f"a batch of {len(rows)} rows: each is answered in turn")
        answers = [answer_one(id_value, problem, call_start) for id_value, problem in rows or [(None, None)]]
        try:
            return _frame(ids, rows or [(None, None)], answers)
        except Exception as exc:  # pragma: no cover - polars can always build this
            runner.failure("building the answer frame", None, exc)
            return pl.DataFrame({"id": [str(i) for i, _ in rows] or ["None"], "answer": [fb] * max(len(rows), 1)})

    def answer_one(id_value: Any, problem: Any, call_start: float) -> int:
        fb = runner.profile.fallback_answer
        try:
            with runner.lock:
                if runner.closed:
                    answer, how = fb, "fallback: predict closed"
                elif id_value is None and problem is None:
                    runner.failure("bad input", None, "no id/problem in the call")
                    answer, how = fb, "fallback: bad input"
                else:
                    answer, how = runner.answer(id_value, problem, call_start)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            runner.failure("unexpected error", id_value, exc)
            answer, how = fb, "fallback: unexpected error"
        seconds = time.monotonic() - call_start
        session = runner.session
        last = session.last if session is not None else None
        runner.last_call = CallReport(str(id_value), answer, how, seconds,
                                      last if last is not None and last.problem_id == str(id_value) else None)
        runner.record("kaggle_call", problem_id=str(id_value), answer=answer, how=how, seconds=round(seconds, 3),
                      call=runner.calls)
        log.info("predict %r -> %d (%s) in %.1f s", id_value, answer, how, seconds)
        return answer

    runner.restore_signal = _on_sigterm(runner)
    predict.__name__ = "predict"
    predict.__qualname__ = "predict"
    predict.runner = runner  # type: ignore[attr-defined]
    predict.close = runner.close  # type: ignore[attr-defined]
    predict.start = lambda: runner.ensure_started(None)  # type: ignore[attr-defined]
    return predict


def _on_sigterm(runner: _Runner) -> Callable[[], None] | None:
    """SIGTERM records the run's end before the process goes (:meth:`_Runner.terminate`), then lets the
    previous handler (or the default: exit) act. Returns what puts the previous handler back (``close``
    calls it). Signal handlers belong to the main thread: elsewhere this is skipped."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        runner.terminate(signum)
        if callable(previous) and previous is not handler:
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore


__all__ = [
    "PROCESS_START",
    "CallReport",
    "GatewayImportError",
    "GatewayReport",
    "GatewayRow",
    "LocalGateway",
    "ResolvedConfig",
    "SubmissionConfig",
    "build_predict",
    "run_gateway",
]
