"""Run a pure function with a hard time (and memory) limit, from any thread.

Symbolic maths can hang or eat memory (``sympy`` on ``2^{10^{100}}``; math-verify's own timeout uses
``signal.alarm`` and crashes outside the main thread — a known math-verify issue). We run such calls in a
small pool of long-lived helper processes: a call that overruns is answered with :class:`CallTimeout`
and its process is killed and replaced lazily. The helpers are started with ``python -m`` over a socket
pair, not with ``multiprocessing`` fork/spawn, so they never copy a threaded parent (vLLM, CUDA) and never
re-import a user's unguarded ``__main__``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import queue
import resource
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

DEFAULT_MEMORY_MB = 2048


class CallTimeout(TimeoutError):
    """The call did not finish within its limit; its helper process was killed."""


class CallFailed(RuntimeError):
    """The helper process died or the function raised; the message says which."""


class _Helper:
    """One helper process and its connection."""

    def __init__(self, memory_mb: int) -> None:
        parent, child = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA", "VLLM"))}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kit.runtime.timeouts", str(child.fileno()), str(memory_mb)],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        child.close()
        self.conn = Connection(parent.detach())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()


class TimeLimitedPool:
    """A few helper processes that run ``module:function`` calls with a wall-clock limit."""

    def __init__(self, size: int = 1, memory_mb: int = DEFAULT_MEMORY_MB) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.memory_mb = memory_mb
        self._free: queue.Queue[_Helper | None] = queue.Queue()
        for _ in range(size):
            self._free.put(None)  # started lazily on first use
        self._all: list[_Helper] = []
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """``fn(*args)`` in a helper; raises :class:`CallTimeout` or :class:`CallFailed`."""
        target = (fn.__module__, fn.__qualname__)
        helper = self._free.get()
        try:
            if helper is None or not helper.alive():
                helper = self._start()
            try:
                helper.conn.send((target, args))
                ready = helper.conn.poll(timeout)
            except (OSError, EOFError) as exc:
                helper.kill()
                helper = None
                raise CallFailed(f"helper process for {target[1]} died: {exc}") from None
            if not ready:
                helper.kill()
                helper = None
                raise CallTimeout(f"{target[1]} did not finish within {timeout:g} s")
            try:
                ok, value = helper.conn.recv()
            except (OSError, EOFError):
                helper.kill()
                helper = None
                raise CallFailed(f"helper process for {target[1]} died (memory limit or crash)") from None
            if not ok:
                raise CallFailed(value)
            return value
        finally:
            self._free.put(helper)

    def _start(self) -> _Helper:
        helper = _Helper(self.memory_mb)
        with self._lock:
            self._all = [h for h in self._all if h.alive()] + [helper]
        return helper

    def close(self) -> None:
        with self._lock:
            for helper in self._all:
                helper.kill()
            self._all.clear()


_default_pool: TimeLimitedPool | None = None
_default_lock = threading.Lock()


def default_pool() -> TimeLimitedPool:
    """The process-wide pool used by :mod:`kit.runtime.answers` (sized by ``AIMO_KIT_SYMBOLIC_WORKERS``)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            size = int(os.environ.get("AIMO_KIT_SYMBOLIC_WORKERS", "1"))
            _default_pool = TimeLimitedPool(size=max(1, size))
            atexit.register(_default_pool.close)
        return _default_pool


def call_with_timeout(fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
    """Run ``fn(*args)`` (a module-level function) in the default pool within ``timeout`` seconds."""
    return default_pool().call(fn, *args, timeout=timeout)


def _serve(fd: int, memory_mb: int) -> None:
    """Helper main loop: receive ((module, name), args), reply (ok, value)."""
    limit = memory_mb * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.set_int_max_str_digits(100_000)
    conn = Connection(fd)
    while True:
        try:
            (module, name), args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            obj: Any = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
            conn.send((True, obj(*args)))
        except MemoryError:
            conn.send((False, f"{name}: out of memory ({memory_mb} MB limit)"))
        except Exception as exc:
            conn.send((False, f"{name}: {type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
