"""One run's session: engine, sandbox, solver, time bank and records, and the one per-problem loop.

``predict`` (:mod:`kit.runtime.kaggle`, which the local dry-run also drives) opens a :class:`Session` from a
:class:`~kit.runtime.run_config.ResolvedConfig` and calls :meth:`Session.answer` for each problem: budget from the time bank → solve (or skip when no time is left) → records → the
outcome back to the bank (which corrects its throughput model from it). There is no second loop with
its own margins or tiny-model rules: what the dry-run shows is what the submission does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any

from kit.runtime.difficulty_hook import policy_with_difficulty
from kit.runtime.engines.base import Engine, EngineFactory, engine_label
from kit.runtime.engines.presets import get_preset
from kit.runtime.engines.vllm_engine import VLLMEngine
from kit.runtime.records import RunRecorder
from kit.runtime.results import ProblemResult
from kit.runtime.run_config import ResolvedConfig
from kit.runtime.schedule import Budget, Outcome, Policy, TimeBank, make_policy
from kit.runtime.solver import Solver, clean_problem, sandbox_for
from kit.runtime.throughput import get_speed
from kit.runtime.voting import PLAIN

Log = Callable[[str], None]
RESTART_WINDOW_S = 600.0
"""A second engine death within this many seconds of a restart is not restarted again (a restart loop
would spend the run); the session answers the fallback from then on, with one warning."""
RETRY_MIN_S = 20.0
"""A problem whose engine died is retried after the restart when at least this much of its deadline is left."""


def load_policy(resolved: ResolvedConfig, *, strict: bool) -> tuple[Policy, str | None]:
    """The configured time policy, fed by the difficulty predictor when one is configured, and a warning.

    ``strict`` (dry-run): a predictor that does not load is an error before anything starts; otherwise
    (``predict``) it costs its hook, not the run: the policy runs without it and the warning says why."""
    name, params, difficulty = resolved.policy, dict(resolved.policy_params), resolved.config.difficulty
    if difficulty is None:
        return make_policy(name, params), None
    try:
        return policy_with_difficulty(name, difficulty, params), None
    except Exception as exc:
        if strict:
            raise
        return make_policy(name, params), (f"difficulty predictor {difficulty} failed to load "
                                           f"({type(exc).__name__}: {exc}); time policy {name} without it")


async def start_vllm(resolved: ResolvedConfig, log: Log | None = None) -> Engine:
    """vLLM on the configured model with its preset. The built-in tiny models are their callers' to start
    (:func:`kit.runtime.tiny_engines.tiny_engine_factory`): a submission never imports their builders."""
    config = resolved.config
    if config.engine != "vllm":
        raise ValueError(f"engine {config.engine!r} is not started by the runtime layer: pass its factory "
                         "(replay: kit.sim.replay.engine_factory(config))")
    if config.model is None:
        raise ValueError("no model given: the built-in tiny model is started by its caller "
                         "(engine_factory=kit.runtime.tiny_engines.tiny_engine_factory(config))")
    return await VLLMEngine.start(config.model_path(), get_preset(resolved.preset), log=log)


class Session:
    """Everything one run holds; :meth:`open` starts it, :meth:`answer` is the per-problem loop."""

    def __init__(self, resolved: ResolvedConfig, engine: Engine, *, policy: Policy, recorder: RunRecorder | None,
                 started_at: float, n_problems: int | None = None, started_from: str = "kit import") -> None:
        self.resolved = resolved
        self.engine = engine
        self.profile = profile = resolved.profile
        self.recorder = recorder
        self.solver_config = resolved.solver
        self.sandbox = sandbox_for(self.solver_config)
        self.solver = Solver(engine, self.solver_config, profile=profile, sandbox=self.sandbox, recorder=recorder)
        self.startup_seconds = max(time.time() - started_at, 0.0)
        self.max_samples = min(self.solver_config.n_samples, engine.max_num_seqs)
        speed = get_speed(resolved.speed) if resolved.speed else engine.speed
        self.bank = TimeBank(policy, profile, start=engine.clock.now(), total_seconds=resolved.total_seconds,
                             startup_seconds=self.startup_seconds,
                             call_margin_seconds=2 * resolved.config.call_margin_seconds,
                             n_problems=n_problems, max_samples=self.max_samples,
                             max_tokens=self.solver_config.max_tokens, speed=speed)
        self.model = engine_label(engine)
        self.start_engine: Callable[[], Awaitable[Engine]] | None = None
        """How to start another engine like this one (set by :meth:`open`): a restart after a death."""
        self.log: Log = print
        self.engine_failed: str | None = None
        """Why the engine is gone for good (died again soon after a restart, or did not restart)."""
        self._last_restart: float | None = None
        self._restarting: asyncio.Task[bool] | None = None
        self.last: ProblemResult | None = None
        """The latest problem's result, also when its solve was cancelled (``predict``'s timeout)."""
        self._record("run_start", **jsonable(resolved.record()),
                     model=self.model, engine=resolved.config.engine,
                     startup_seconds=round(self.startup_seconds, 2), startup_counted_from=started_from,
                     bank_seconds=round(self.bank.state.end - self.bank.state.start, 2),
                     max_samples=self.max_samples, max_num_seqs=engine.max_num_seqs, speed=jsonable(asdict(speed)),
                     policy_object=getattr(policy, "name", type(policy).__name__))

    @classmethod
    async def open(cls, resolved: ResolvedConfig, *, engine_factory: EngineFactory | None = None,
                   recorder: RunRecorder | None = None, started_at: float | None = None,
                   started_from: str = "kit import", n_problems: int | None = None, strict: bool = True,
                   policy: Policy | None = None, log: Log = print) -> Session:
        """Load the policy (unless given; a bad difficulty predictor fails here when ``strict``), start the
        engine, and open the session; ``started_at`` (``time.time()``) is when the run's clock started."""
        warning = None
        if policy is None:
            policy, warning = load_policy(resolved, strict=strict)
        t0 = time.time()
        if engine_factory is None:
            engine = await start_vllm(resolved, log=log)
        else:
            made = engine_factory()
            engine = await made if inspect.isawaitable(made) else made
        try:
            session = cls(resolved, engine, policy=policy, recorder=recorder,
                          started_at=t0 if started_at is None else started_at, n_problems=n_problems,
                          started_from=started_from if started_at is not None else "engine start")
        except BaseException:
            await engine.close()
            raise
        if warning is not None:
            log(warning)
            session.warn("difficulty predictor", warning)
        session.log = log

        async def again() -> Engine:
            if engine_factory is None:
                return await start_vllm(resolved, log=log)
            made = engine_factory()
            return await made if inspect.isawaitable(made) else made

        session.start_engine = again
        session.drain_sandbox()
        return session

    # --- the per-problem loop ------------------------------------------------------------------------

    def plan(self, problem_id: str, problem: Any) -> Budget:
        """The time bank's budget for the next problem (recorded as a ``budget`` event)."""
        now = self.engine.clock.now()
        budget = self.bank.next_budget(now, clean_problem(problem))
        self._record("budget", problem_id=str(problem_id), seconds=round(budget.deadline - now, 3),
                     n_samples=budget.n_samples, max_tokens=budget.max_tokens, skip=budget.skip,
                     throughput_scale=round(self.bank.throughput.scale, 4))
        return budget

    async def answer(self, problem_id: str, problem: Any, *, gold: int | None = None,
                     budget: Budget | None = None) -> ProblemResult:
        """Budget (:meth:`plan`, unless given) → solve or skip → records → bank. Never raises, except the
        caller's cancellation (after the solver recorded everything and the bank was charged the time)."""
        if self._restarting is not None and not self._restarting.done():  # a restart an abandoned call left
            await asyncio.shield(self._restarting)
        clock = self.engine.clock
        start = clock.now()
        budget = budget or self.plan(problem_id, problem)
        if budget.skip or self.engine_failed is not None:
            why = "time limit reached before this problem" if budget.skip else f"no engine: {self.engine_failed}"
            result = self.solver.skip(str(problem_id), why, problem=clean_problem(problem), gold=gold)
        else:
            try:
                result = await self._solve(str(problem_id), problem, budget, gold)
                if result.engine_dead is not None and await self._restart(result.engine_dead, str(problem_id)) \
                        and budget.deadline - self.engine.clock.now() >= RETRY_MIN_S:
                    result = await self._solve(str(problem_id), problem, budget, gold, first_index=len(result.samples))
            except asyncio.CancelledError:
                self.last = self.solver.last
                self.bank.record(Outcome(clock.now() - start, 0, "cancelled", 0, 0))
                raise
        self.last = result
        self.bank.record(Outcome.of(result))
        self.drain_sandbox()
        return result

    async def _solve(self, problem_id: str, problem: Any, budget: Budget, gold: int | None,
                     first_index: int = 0) -> ProblemResult:
        cfg = self.solver_config
        rules = budget.rules
        if rules.weighting == PLAIN and cfg.rules.weighting != PLAIN:
            # the policy decides when to stop; how much a vote weighs is the model's (entropy: AIMO3)
            rules = replace(rules, weighting=cfg.rules.weighting)
        return await self.solver.solve(
            problem_id, problem, deadline=budget.deadline, rules=rules, gold=gold, first_index=first_index,
            n_samples=min(budget.n_samples, cfg.n_samples), max_tokens=min(budget.max_tokens, cfg.max_tokens))

    async def _restart(self, cause: str, problem_id: str) -> bool:
        """Restart a dead engine (same preset and model; the weights are in the page cache), at most once per
        :data:`RESTART_WINDOW_S`; whether a live engine is there now. The restart runs as its own task,
        shielded: a caller that stops waiting (``predict``'s timeout) does not leave it half done."""
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.ensure_future(self._restart_engine(cause, problem_id))
        return await asyncio.shield(self._restarting)

    async def _restart_engine(self, cause: str, problem_id: str) -> bool:
        if self.engine_failed is not None:
            return False
        now = time.monotonic()
        if self.start_engine is None or (self._last_restart is not None
                                         and now - self._last_restart < RESTART_WINDOW_S):
            why = "no way to restart it" if self.start_engine is None else \
                f"it died again {now - self._last_restart:.0f} s after a restart"  # type: ignore[operator]
            return self._give_up(f"the engine died ({cause}); {why}: every later problem answers the fallback")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.engine.close(), timeout=30.0)
        try:
            engine = await self.start_engine()
        except Exception as exc:
            return self._give_up(f"the engine died ({cause}) and did not restart ({type(exc).__name__}: {exc}): "
                                 "every later problem answers the fallback")
        seconds = time.monotonic() - now
        self.engine = engine
        self.solver.engine = engine
        self._last_restart = time.monotonic()
        self._record("engine_restart", problem_id=problem_id, cause=cause[:500], seconds=round(seconds, 2))
        self.log(f"engine died ({cause[:200]}); restarted in {seconds:.1f} s")
        return True

    def _give_up(self, message: str) -> bool:
        self.engine_failed = message
        self.warn("engine", message)
        print(f"WARNING {message}", file=sys.stderr, flush=True)
        return False

    def drain_sandbox(self) -> None:
        """The sandbox's problems since the last call (refill failures, zygote restarts, preload or
        warm-up failures) into the run records as ``warning`` events."""
        if self.sandbox is not None:
            for e in self.sandbox.drain_events():
                self.warn(e["what"], e["error"])

    async def close(self) -> None:
        """Shut the sandbox and the engine down (idempotent)."""
        if self.sandbox is not None:
            self.sandbox.shutdown()
            self.sandbox = None
        await self.engine.close()

    def warn(self, what: str, message: str) -> None:
        """Something went wrong that the run survives: into the records (event ``warning``)."""
        self._record("warning", what=what, error=message)

    def _record(self, event: str, **fields: Any) -> None:
        if self.recorder is not None:
            self.recorder.write(event, **fields)


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data (what a record holds: tuples as lists, other objects as their ``str``)."""
    return json.loads(json.dumps(obj, default=str))
