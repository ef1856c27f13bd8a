"""The virtual-time decoder behind the replay engines: active requests advancing together, chunk by chunk,
on a hardware speed model.

Why one class: the text replay (:class:`kit.sim.replay.ReplayEngine`, recorded texts) and the token replay
(:class:`kit.sim.token_replay.TokenReplayEngine`, logged Harmony ids) decode different recordings but must
share the same clock discipline, or a policy would be judged differently on the two. A subclass starts its
requests (:meth:`VirtualDecoder._start`: which recording, where in it) and says what a planned chunk emits
(:meth:`VirtualDecoder._commit`); this class streams them, lets time pass and aborts.

A request object has ``id``, ``slot`` (:class:`kit.sim.streams.Slot`), ``finished``, ``prefill`` (prompt
tokens not in the prefix cache), ``prompt_tokens``, ``tokens`` and ``plan(steps)`` →
:class:`kit.sim.streams.Plan`. One coordinator task advances all active requests together,
``chunk_tokens`` decode steps at a time (a chunk ends early where a request finishes, and at the step
during which a clock sleeper wakes, so finish times are exact per token and a watchdog acts within a
step), with the duration from the :class:`~kit.runtime.throughput.SpeedModel`. In virtual mode it takes a
step only when every other task of the event loop is blocked and nobody holds the clock, so what the
solver does between chunks happens at a well-defined virtual time and results never depend on event-loop
scheduling. ``realtime`` paces steps with real ``asyncio.sleep`` (divided by ``speedup``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from kit.runtime.engines.base import Chunk, Clock, GenParams, Prompt
from kit.runtime.throughput import SpeedModel
from kit.sim.clock import VirtualClock, settle
from kit.sim.streams import Plan


@dataclass
class ReplayStats:
    """Token accounting, so tests (and cost estimates) can see what each request consumed."""

    tokens_by_request: dict[str, int] = field(default_factory=dict)
    total_tokens: int = 0
    prefill_tokens: int = 0
    requests: int = 0
    continuations: int = 0
    unaligned: int = 0
    """Continuation requests whose prompt holds appended text that replaced no recorded tool output."""
    finish_reasons: dict[str, int] = field(default_factory=dict)


class VirtualDecoder:
    """Streams requests decoded together on a speed model (see the module docstring)."""

    clock: Clock
    speed: SpeedModel
    chunk_tokens: int
    speedup: float

    def __init__(self, *, clock: Clock, speed: SpeedModel, chunk_tokens: int, speedup: float = 1.0) -> None:
        self.clock = clock
        self.speed = speed
        self.chunk_tokens = chunk_tokens
        self.speedup = speedup
        self.stats = ReplayStats()
        self._active: dict[str, Any] = {}
        self._driver: asyncio.Task[None] | None = None
        self._closed = False

    # -- what a subclass provides -------------------------------------------------------------------

    def _start(self, prompt: Prompt, params: GenParams, request_id: str) -> Any:
        """A new request (registered with :meth:`_launch`)."""
        raise NotImplementedError

    def _commit(self, req: Any, plan: Plan) -> None:
        """Apply a planned chunk: advance the request, emit its chunk, finish it when the plan says so."""
        raise NotImplementedError

    def _abort_request(self, req: Any) -> None:
        raise NotImplementedError

    # -- the engine interface ---------------------------------------------------------------------------

    @property
    def active_requests(self) -> list[str]:
        return list(self._active)

    async def generate(self, prompt: Prompt, params: GenParams, request_id: str) -> AsyncIterator[Chunk]:
        req = self._start(prompt, params, request_id)
        try:
            while True:
                chunk = await req.slot.get()
                yield chunk
                if chunk.finished:
                    return
        finally:
            if not req.finished:  # the consumer stopped listening: vLLM aborts such requests
                self._abort_request(req)

    async def abort(self, request_ids: Iterable[str]) -> None:
        for rid in list(request_ids):
            req = self._active.get(rid)
            if req is not None:
                self._abort_request(req)

    async def close(self) -> None:
        self._closed = True
        await self.abort(list(self._active))
        if self._driver is not None:
            await asyncio.gather(self._driver, return_exceptions=True)

    # -- the coordinator ------------------------------------------------------------------------------

    def _check_new(self, request_id: str) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if request_id in self._active:
            raise ValueError(f"request id {request_id!r} is already running")

    def _launch(self, req: Any) -> None:
        """Count and register a started request; start the coordinator if it is idle."""
        self.stats.requests += 1
        self.stats.tokens_by_request[req.id] = 0
        self._active[req.id] = req
        if self._driver is None:
            if isinstance(self.clock, VirtualClock):
                self.clock.engage()
            self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def _drive(self) -> None:
        """Advance all active requests together until none is left."""
        virtual = isinstance(self.clock, VirtualClock)
        try:
            while self._active:
                if virtual:
                    await self._quiesce()
                if not self._active:
                    break
                batch = list(self._active.values())
                speed, steps = self.speed, self.chunk_tokens
                prefill = sum(r.prefill for r in batch)
                for r in batch:
                    self.stats.prefill_tokens += r.prefill
                    r.prefill = 0
                prefill_s = speed.prefill_seconds(prefill)
                context = sum(r.prompt_tokens + r.tokens for r in batch)
                plans = [r.plan(steps) for r in batch]
                k = min(p.tokens for p in plans)  # the chunk ends where the first request finishes
                if virtual and (wake := self.clock.next_wakeup()) is not None:  # type: ignore[attr-defined]
                    # ... and at the step during which a sleeper (a watchdog) wakes: it acts in time
                    k = max(speed.steps_within(len(batch), context, k, wake - self.clock.now() - prefill_s), 1)
                if k < steps:
                    plans = [r.plan(k) for r in batch]
                dt = prefill_s + speed.chunk_seconds(len(batch), context, k)
                if virtual:
                    await self._advance(dt, batch)
                else:
                    await asyncio.sleep(dt / self.speedup)
                for r, p in zip(batch, plans, strict=True):
                    if not r.finished:  # aborted while the time passed
                        self._commit(r, p)
        finally:
            self._driver = None
            if virtual:
                self.clock.disengage()  # type: ignore[attr-defined]

    async def _quiesce(self) -> None:
        clock: VirtualClock = self.clock  # type: ignore[assignment]
        while True:
            await settle()
            if not clock.held:
                return
            await clock.wait_released()

    async def _advance(self, dt: float, batch: list[Any]) -> None:
        """Let ``dt`` virtual seconds pass, waking sleepers on the way (and letting them act). If they
        abort the whole batch, time stops there: nothing is decoding any more."""
        clock: VirtualClock = self.clock  # type: ignore[assignment]
        target = clock.now() + dt
        while (wake := clock.next_wakeup()) is not None and wake <= target:
            clock.advance_to(wake)
            await self._quiesce()
            if all(r.finished for r in batch):
                return
        clock.advance_to(target)

    def _count(self, req: Any, tokens: int) -> None:
        req.tokens += tokens
        self.stats.tokens_by_request[req.id] += tokens
        self.stats.total_tokens += tokens

    def _finished(self, req: Any, reason: str) -> None:
        req.finished = True
        self._active.pop(req.id, None)
        self.stats.finish_reasons[reason] = self.stats.finish_reasons.get(reason, 0) + 1
