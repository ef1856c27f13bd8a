"""Virtual time for the replay engine and the tests: a clock whose time passes only when something makes it.

See :class:`VirtualClock`; :class:`kit.runtime.engines.base.Clock` is the interface, and the runtime's
:class:`~kit.runtime.engines.base.RealClock` its real-time twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import weakref
from collections.abc import Iterator

log = logging.getLogger(__name__)

_settling: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
"""Per event loop, the tasks inside :func:`settle` now (they wait for each other's idleness, so they don't
count). Per loop: with one shared count, a loop stopped while a task was settling (a closed ``predict``'s)
left its count behind, and every other loop's clock then took "busy" for "idle" and jumped its watchdogs."""


async def settle(max_rounds: int = 1000) -> None:
    """Yield until every other task of the loop is blocked (nothing ready to run but other settlers).

    Uses the CPython event loop's ready queue when it has one; otherwise yields a fixed number of
    times. ``max_rounds`` bounds the wait when some task polls with ``sleep(0)`` forever.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    _settling[loop] = _settling.get(loop, 0) + 1
    try:
        for i in range(max_rounds):
            await asyncio.sleep(0)
            if ready is not None and len(ready) < _settling[loop]:
                return
            if ready is None and i >= 20:
                return
    finally:
        _settling[loop] -= 1


class VirtualClock:
    """A :class:`~kit.runtime.engines.base.Clock` whose time passes only when something makes it pass.

    * An engine that is *engaged* (has requests running) advances it step by step (:meth:`advance_to`),
      waking sleepers whose time has come on the way.
    * Otherwise, when every task is blocked and nothing :meth:`hold` s the clock, it jumps to the
      earliest pending :meth:`sleep` wake-up (a watchdog fires at once, at exactly its virtual time).

    ``hold()`` is for work outside the engine that takes real time (sandbox code, threads, I/O): the
    event loop looks idle then, but the clock must not jump (nor an engine step) until it is done.
    Enter it from the event-loop thread. A task that holds the clock and then sleeps on it deadlocks.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._holds = 0
        self._engaged = 0
        self._changed: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    @property
    def held(self) -> bool:
        return self._holds > 0

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self._now + seconds, next(self._seq), fut))
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        await fut

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                self._signal()

    async def wait_released(self, warn_after: float = 60.0) -> None:
        """Return once nobody holds the clock; log a warning each ``warn_after`` real seconds held (a
        task that holds the clock while it waits for the engine or the clock never lets go)."""
        while self._holds:
            try:
                await asyncio.wait_for(self._event().wait(), timeout=warn_after)
            except asyncio.TimeoutError:
                log.warning("virtual clock held for %.0f s of real time: is a holder waiting on the "
                            "engine or on clock.sleep? (that deadlocks)", warn_after)
            self._event().clear()

    def next_wakeup(self) -> float | None:
        """The earliest pending sleeper's wake-up time."""
        while self._waiters and self._waiters[0][2].done():  # cancelled sleepers
            heapq.heappop(self._waiters)
        return self._waiters[0][0] if self._waiters else None

    def advance_to(self, t: float) -> None:
        """Move time forward to ``t`` (never back) and wake every sleeper due by then, earliest first."""
        self._now = max(self._now, t)
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    def engage(self) -> None:
        """An engine starts advancing time itself: no idle jumps until :meth:`disengage`."""
        self._engaged += 1

    def disengage(self) -> None:
        self._engaged -= 1
        if not self._engaged:
            self._signal()

    def _event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._changed is None or self._changed[0] is not loop:  # an Event is bound to one loop
            self._changed = (loop, asyncio.Event())
        return self._changed[1]

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed[1].set()

    async def _tick(self) -> None:
        """Idle jumps: runs while anyone sleeps on this clock."""
        try:
            while self.next_wakeup() is not None:
                await settle()
                if self._engaged or self._holds:
                    self._event().clear()
                    await self._event().wait()
                    continue
                wake = self.next_wakeup()
                if wake is not None:
                    self.advance_to(wake)
        finally:
            self._ticker = None
