"""The Kaggle side of a submission: ``predict`` for the gateway, our local gateway, and the serve switch.

* :func:`build_predict` turns a :class:`SubmissionConfig` into the function the Kaggle gateway calls
  (``predict.__name__ == "predict"``). The engine, sandbox, solver and time bank start lazily on the
  first call (it has no deadline); all async work runs on one persistent event loop in a background
  thread (vLLM's async engine needs one loop for its whole life) and ``predict`` waits for it at most
  until the problem's deadline + a margin, never past the per-call limit. ``predict`` never raises: any
  failure (engine start, solver, timeout, bad input) is logged, written to the run records, and answered
  with the profile's fallback answer. An engine that failed to start is not retried.
* :class:`LocalGateway` is our implementation of the gateway contract (DESIGN.md §3): rows shuffled,
  one length-1 ``pl.Series`` per column, per-call deadlines timed, every returned frame validated,
  ``submission.parquet`` written, a :class:`GatewayReport` (with a score when the CSV has answers).
* :func:`run_gateway` picks Kaggle's server (``serve()`` on a competition rerun), Kaggle's local
  gateway (competition data present), or ours.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import json
import logging
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.runtime.config import from_dict, load_yaml
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.solver import SolverConfig

log = logging.getLogger(__name__)

PROCESS_START = time.monotonic()
"""Monotonic time this module was imported: the time bank counts start-up from here."""


# ----------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class SubmissionConfig:
    profile: str = "aimo2"
    model: str | None = None
    """Model folder for vLLM; None = the built-in tiny random model (pipeline check only)."""
    preset: str | None = None
    """Engine preset (None: ``cpu`` for the tiny model, ``l4x4`` for a real one)."""
    engine: str = "vllm"
    """``vllm`` or ``replay`` (recorded samples of ``traces``, on a virtual clock)."""
    traces: str = "skythought_aime24"
    solver: SolverConfig = field(default_factory=SolverConfig)
    """With the tiny model a default SolverConfig is replaced by the dry-run's small one."""
    policy: str = "ours"
    difficulty: str | None = None
    """A difficulty predictor folder (``python -m training.difficulty``; ship it in the model dataset)
    scaling ``ours``' deadlines. If it fails to load, the run goes on without it (logged)."""
    total_seconds: float | None = None
    """Seconds for the whole notebook (None: the profile's limit)."""
    records_dir: str = "aimo-records"
    competition_dir: str | None = None
    """None: ``$AIMO_COMPETITION_DIR`` or ``/kaggle/input/<competition_slug>``."""
    call_margin_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.engine not in ("vllm", "replay"):
            raise ValueError(f"engine must be 'vllm' or 'replay', got {self.engine!r}")
        get_profile(self.profile)  # unknown profile → ValueError (ConfigError via from_dict)
        if self.call_margin_seconds < 0:
            raise ValueError(f"call_margin_seconds must be >= 0, got {self.call_margin_seconds}")
        if self.total_seconds is not None and self.total_seconds <= 0:
            raise ValueError(f"total_seconds must be > 0, got {self.total_seconds}")

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = None) -> SubmissionConfig:
        return load_yaml(cls, path, section=section)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubmissionConfig:
        return from_dict(cls, data)

    def resolved_competition_dir(self) -> Path:
        if self.competition_dir:
            return Path(self.competition_dir)
        env = os.environ.get("AIMO_COMPETITION_DIR")
        if env:
            return Path(env)
        return Path("/kaggle/input") / get_profile(self.profile).competition_slug


# ----------------------------------------------------------------------------------------------------
# predict


class _LoopThread:
    """One asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="aimo-kaggle-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class _Runner:
    """State behind one ``predict``: lazily started engine/solver/time bank, failures remembered."""

    def __init__(self, config: SubmissionConfig, *, engine_factory: Callable[[], Any] | None,
                 started_at: float, profile: Profile | None) -> None:
        self.config = config
        self.profile = profile or get_profile(config.profile)
        self.engine_factory = engine_factory
        self.started_at = started_at
        self.lock = threading.Lock()
        self.loop: _LoopThread | None = None
        self.engine: Any = None
        self.model_name = ""
        self.sandbox: Any = None
        self.solver: Any = None
        self.bank: Any = None
        self.solver_config: SolverConfig = config.solver
        self.start_error: str | None = None
        self.calls = 0
        self.closed = False
        self.recorder: Any = None
        try:
            from kit.runtime.records import RunRecorder

            self.recorder = RunRecorder(Path(config.records_dir) / "records.jsonl")
        except Exception as exc:  # records are a debugging aid, never a reason to fail
            log.error("cannot open run records in %s: %s", config.records_dir, exc)

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

    async def _make_engine(self) -> Any:
        cfg = self.config
        if self.engine_factory is not None:
            engine = self.engine_factory()
            if inspect.isawaitable(engine):
                engine = await engine
            self.model_name = getattr(engine, "name", type(engine).__name__)
            return engine
        from kit.runtime.engines.factory import start_engine

        engine, self.model_name = await start_engine(cfg.engine, model=cfg.model, preset=cfg.preset,
                                                     traces=cfg.traces,
                                                     log=lambda msg: log.info("engine: %s", msg))
        return engine

    def _policy(self) -> Any:
        """The time policy; a difficulty predictor that cannot be loaded costs its hook, not the run."""
        from kit.learn.difficulty import policy_with_difficulty
        from kit.runtime.schedule import make_policy

        try:
            return policy_with_difficulty(self.config.policy, self.config.difficulty)
        except Exception as exc:
            self.failure("difficulty predictor failed to load; time policy without it", None, exc)
            return make_policy(self.config.policy)

    async def _start(self) -> None:
        from kit.runtime.schedule import TimeBank
        from kit.runtime.solver import TINY_SOLVER, Solver, sandbox_for

        cfg = self.config
        solver_cfg = cfg.solver
        if cfg.engine == "vllm" and cfg.model is None and self.engine_factory is None and solver_cfg == SolverConfig():
            solver_cfg = TINY_SOLVER
        self.solver_config = solver_cfg
        self.engine = await self._make_engine()
        self.sandbox = sandbox_for(solver_cfg)
        self.solver = Solver(self.engine, solver_cfg, profile=self.profile, sandbox=self.sandbox,
                             recorder=self.recorder)
        total = cfg.total_seconds if cfg.total_seconds is not None else self.profile.total_seconds
        startup = time.monotonic() - self.started_at
        self.bank = TimeBank(self._policy(), self.profile, start=self.engine.clock.now(),
                             total_seconds=total, startup_seconds=startup,
                             call_margin_seconds=2 * cfg.call_margin_seconds,
                             max_samples=solver_cfg.n_samples)
        self.record("run_start", kind="kaggle", config=_jsonable(asdict(cfg)), solver=_jsonable(asdict(solver_cfg)),
                    profile=self.profile.name, model=self.model_name, startup_seconds=round(startup, 2),
                    bank_end_in_seconds=round(self.bank.state.end - self.engine.clock.now(), 2))
        log.info("predict ready: %s, start-up %.1f s since import, %.0f s left in the bank",
                 self.model_name, startup, self.bank.state.end - self.engine.clock.now())

    def ensure_started(self, problem_id: Any) -> bool:
        """Start everything once; False if it failed (now or on an earlier call)."""
        if self.solver is not None:
            return True
        if self.start_error is not None:
            return False
        try:
            if self.loop is None:
                self.loop = _LoopThread()
            self.loop.submit(self._start()).result()
            return True
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.start_error = f"{type(exc).__name__}: {exc}"
            self.failure("engine start failed; every call answers the fallback", problem_id, exc)
            self._cleanup_partial()
            return False

    def _cleanup_partial(self) -> None:
        try:
            if self.sandbox is not None:
                self.sandbox.shutdown()
        except Exception:  # pragma: no cover
            pass
        self.sandbox = None

    # --- one call ------------------------------------------------------------------------------

    def answer(self, problem_id: Any, problem: Any, call_start: float) -> tuple[int, str]:
        """(answer, how it was decided); never raises."""
        fb = self.profile.fallback_answer
        first = self.calls == 0
        self.calls += 1
        if not self.ensure_started(problem_id):
            return fb, f"fallback: engine not started ({self.start_error})"
        from kit.runtime.schedule import Outcome

        assert self.loop is not None
        clock = self.engine.clock
        try:
            budget = self.bank.next_budget(clock.now(), problem)
        except Exception as exc:
            self.failure("time bank failed", problem_id, exc)
            return fb, "fallback: time bank error"
        if budget.skip:
            result = self.solver.skip(str(problem_id), "time limit reached before this problem",
                                      problem=problem if isinstance(problem, str) else "")
            self._bank_record(Outcome(0.0, 0, result.reason, 0, 0, 0.0))
            self.record("kaggle_skip", problem_id=str(problem_id), reason="time bank cutoff")
            return result.answer, "skip: time limit reached"
        cfg = self.solver_config
        margin = self.config.call_margin_seconds
        wait = max(budget.deadline - clock.now(), 0.0) + margin
        per_call = self.profile.per_call_seconds
        if per_call is not None and not first:
            wait = min(wait, per_call - margin - (time.monotonic() - call_start))
        wait = max(wait, 0.5)
        coro = self.solver.solve(str(problem_id), problem, deadline=budget.deadline, rules=budget.rules,
                                 n_samples=min(budget.n_samples, cfg.n_samples),
                                 max_tokens=min(budget.max_tokens, cfg.max_tokens))
        fut = self.loop.submit(coro)
        try:
            result = fut.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            self.failure("timed out", problem_id, f"no result within {wait:.1f} s (deadline + margin); "
                                                  "solve cancelled")
            self._bank_record(Outcome(time.monotonic() - call_start, 0, "timeout", 0, 0, 0.0))
            return fb, "fallback: timeout"
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.failure("solver failed", problem_id, exc)
            return fb, "fallback: solver error"
        self._bank_record(Outcome.of(result))
        answer = result.answer
        if not isinstance(answer, int) or isinstance(answer, bool) or not self.profile.in_range(answer):
            self.failure("solver answer out of range", problem_id, f"solver returned {answer!r}")
            return fb, "fallback: bad solver answer"
        if result.error:
            self.record("kaggle_error", what="solver fallback", problem_id=str(problem_id),
                        error=result.error.split("\n")[0])
            log.warning("problem %r answered with the fallback: %s", problem_id, result.error.split("\n")[0])
        return answer, result.reason

    def _bank_record(self, outcome: Any) -> None:
        try:
            self.bank.record(outcome)
        except Exception as exc:  # pragma: no cover
            log.error("time bank record failed: %s", exc)

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.loop is not None and self.engine is not None:
            try:
                self.loop.submit(self.engine.close()).result(timeout=60)
            except Exception as exc:
                log.warning("engine close failed: %s", exc)
        self._cleanup_partial()
        if self.loop is not None:
            self.loop.stop()
        self.record("run_end", kind="kaggle", calls=self.calls)
        if self.recorder is not None:
            self.recorder.close()


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _scalar(value: Any) -> Any:
    """The single value of a length-1 Series / one-row column, or the value itself."""
    import polars as pl

    if isinstance(value, pl.Series):
        return value[0] if len(value) else None
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _parse_call(args: tuple, kwargs: dict) -> tuple[Any, Any, Any]:
    """(id as given — a length-1 Series or a value, id value, problem) from the gateway's call shapes."""
    import polars as pl

    if len(args) == 1 and isinstance(args[0], pl.DataFrame):
        df = args[0]
        id_obj = df["id"].head(1) if "id" in df.columns else None
        problem = df["problem"][0] if "problem" in df.columns and df.height else None
        return id_obj, _scalar(id_obj), problem
    values = dict(kwargs)
    names = ["id", "problem", "answer"]
    for i, a in enumerate(args):
        name = a.name if isinstance(a, pl.Series) and a.name in names else (names[i] if i < len(names) else f"_{i}")
        values.setdefault(name, a)
    id_obj = values.get("id")
    if isinstance(id_obj, pl.Series):
        id_obj = id_obj.head(1)
    return id_obj, _scalar(id_obj), _scalar(values.get("problem"))


def _frame(id_obj: Any, id_value: Any, answer: int) -> Any:
    import polars as pl

    if isinstance(id_obj, pl.Series) and len(id_obj) == 1:
        ids = id_obj.rename("id")
    else:
        ids = pl.Series("id", [id_value])
    return pl.DataFrame({"id": ids, "answer": pl.Series("answer", [int(answer)], dtype=pl.Int64)})


def build_predict(config: SubmissionConfig, *, engine_factory: Callable[[], Any] | None = None,
                  started_at: float | None = None, profile: Profile | None = None) -> Callable[..., Any]:
    """The gateway's ``predict`` for ``config`` (see the module docstring). Never raises.

    Test hooks: ``engine_factory`` (a callable returning an Engine or an awaitable of one, called on the
    loop thread) replaces the configured engine; ``started_at`` (monotonic) replaces the import time as
    the run's start; ``profile`` replaces ``config.profile``'s Profile (e.g. a short per-call limit).
    The returned function has ``.close()`` (engine, sandbox, loop, records) and ``.runner``.
    """
    runner = _Runner(config, engine_factory=engine_factory,
                     started_at=PROCESS_START if started_at is None else started_at, profile=profile)

    def predict(*args: Any, **kwargs: Any) -> Any:
        call_start = time.monotonic()
        fb = runner.profile.fallback_answer
        id_obj: Any = None
        id_value: Any = None
        try:
            id_obj, id_value, problem = _parse_call(args, kwargs)
        except Exception as exc:
            runner.failure("bad input", None, exc)
            problem = None
        try:
            with runner.lock:
                if runner.closed:
                    answer, how = fb, "fallback: predict closed"
                elif id_obj is None and problem is None:
                    runner.failure("bad input", None, f"no id/problem in call args {args!r:.200} {kwargs!r:.200}")
                    answer, how = fb, "fallback: bad input"
                else:
                    answer, how = runner.answer(id_value, problem, call_start)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            runner.failure("unexpected error", id_value, exc)
            answer, how = fb, "fallback: unexpected error"
        seconds = time.monotonic() - call_start
        runner.record("kaggle_call", problem_id=str(id_value), answer=answer, how=how, seconds=round(seconds, 3),
                      call=runner.calls)
        log.info("predict %r -> %d (%s) in %.1f s", id_value, answer, how, seconds)
        try:
            return _frame(id_obj, id_value, answer)
        except Exception as exc:  # pragma: no cover - polars can always build this
            runner.failure("building the answer frame", id_value, exc)
            import polars as pl

            return pl.DataFrame({"id": [str(id_value)], "answer": [fb]})

    predict.__name__ = "predict"
    predict.__qualname__ = "predict"
    predict.runner = runner  # type: ignore[attr-defined]
    predict.close = runner.close  # type: ignore[attr-defined]
    return predict


# ----------------------------------------------------------------------------------------------------
# Local gateway


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
    """Our gateway, to the AIMO2 contract (DESIGN.md §3), stricter than Kaggle's about what it checks."""

    def __init__(self, csv_path: str | Path, *, profile: str | Profile = "aimo2", seed: int = 0,
                 per_call_seconds: float | None = None, out_dir: str | Path = ".") -> None:
        self.csv_path = Path(csv_path)
        self.profile = get_profile(profile)
        self.seed = seed
        self.per_call_seconds = per_call_seconds if per_call_seconds is not None else self.profile.per_call_seconds
        self.out_dir = Path(out_dir)

    def rows(self) -> Any:
        """The CSV as polars reads it, rows shuffled with the seed."""
        import polars as pl

        df = pl.read_csv(self.csv_path, encoding="utf8-lossy")
        order = list(range(df.height))
        random.Random(self.seed).shuffle(order)
        return df[order]

    def run(self, predict: Callable[..., Any]) -> GatewayReport:
        import polars as pl

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
        import polars as pl

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


def run_gateway(predict: Callable[..., Any], config: SubmissionConfig) -> Path:
    """Serve ``predict`` the right way for where we run; returns the ``submission.parquet`` path."""
    profile = get_profile(config.profile)
    comp = config.resolved_competition_dir()
    if os.environ.get("KAGGLE_IS_COMPETITION_RERUN"):
        cls = _gateway_class(profile, comp)
        log.info("competition rerun: serving %s", profile.gateway_class)
        cls(predict).serve()
        return Path.cwd() / "submission.parquet"
    test_csv = comp / "test.csv"
    if (comp / "kaggle_evaluation").is_dir() and test_csv.is_file():
        cls = _gateway_class(profile, comp)
        log.info("Kaggle local gateway on %s", test_csv)
        cls(predict).run_local_gateway((str(test_csv),))
        return Path.cwd() / "submission.parquet"
    from kit.runtime.problems import problems_path

    csv_path = Path(os.environ["AIMO_TEST_CSV"]) if os.environ.get("AIMO_TEST_CSV") else problems_path("aimo2_reference")
    log.info("our local gateway on %s", csv_path)
    report = LocalGateway(csv_path, profile=profile).run(predict)
    try:
        report.to_json(Path(config.records_dir) / "gateway_report.json")
    except OSError as exc:  # pragma: no cover
        log.warning("cannot write the gateway report: %s", exc)
    for v in report.violations:
        log.error("gateway violation: %s", v)
    return Path(report.submission or "submission.parquet")


__all__ = [
    "PROCESS_START",
    "GatewayImportError",
    "GatewayReport",
    "GatewayRow",
    "LocalGateway",
    "SubmissionConfig",
    "build_predict",
    "run_gateway",
]

