"""The sandbox pool: warm session processes, stateful sessions, hard deadlines, recovery.

``Sandbox`` owns one zygote (see :mod:`kit.runtime.sandbox.worker`) and keeps ``workers`` confined session
processes forked and ready, so a call costs a message round trip, not an interpreter start plus
``import sympy``. A call with ``session=None`` runs in a fresh process that is discarded afterwards; a
named session keeps its process (and its variables) until :meth:`Sandbox.close` or eviction.

Deadlines are enforced twice: inside the cell (SIGALRM raises, the session survives) and here (the
process group is killed ``grace`` seconds after the deadline, for code stuck in C or ignoring signals).
Whatever happens to a session process — segfault, ``os._exit``, the OOM killer — the caller gets a
:class:`RunResult`, never a hang or an exception, and the pool replaces the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path

from kit.runtime.sandbox.confine import Limits
from kit.runtime.sandbox.result import DEFAULT_CUT_MARKER, RunResult, Status
from kit.runtime.sandbox.selftest import self_test

log = logging.getLogger(__name__)

DEFAULT_PRELOAD = ("math", "cmath", "itertools", "functools", "fractions", "decimal", "collections",
                   "re", "numpy", "sympy")
DEFAULT_WARMUP = (
    "import sympy as _sp\n"
    "_x, _y = _sp.symbols('_x _y')\n"
    "_sp.factor(_x**6 - 1); _sp.solve(_x**2 - 2, _x); _sp.simplify(_sp.sin(_x)**2 + _sp.cos(_x)**2)\n"
    "_sp.integrate(_x * _sp.exp(_x), _x); _sp.expand((_x + _y)**3); _sp.factorint(2**32 + 1)\n"
    "_sp.Rational(1, 3) + _sp.sqrt(8); _sp.nsimplify(0.5); _sp.isprime(97); _sp.binomial(10, 3)\n"
    "del _sp, _x, _y\n"
)
"""Run once in the zygote before any fork: sympy imports sub-modules lazily on first use (``factor``
~30 ms, ``simplify`` ~140 ms), a cost every fresh session would otherwise pay again."""


HARMONY_PRELUDE = (
    "import math, itertools, collections, fractions\n"
    "import numpy, numpy as np\n"
    "import sympy, sympy as sp\n"
    "import mpmath\n"
    "mpmath.mp.dps = 64\n"
)
"""What the AIMO3 notebooks' python tool had imported in every kernel (docs/design.md "AIMO3"): gpt-oss
writes ``sp.``, ``np.`` and ``math.`` without importing them, and mpmath at 64 digits."""


class SandboxError(RuntimeError):
    """The sandbox could not start (zygote failed, or the self-test found limits not enforced)."""


@dataclass(frozen=True)
class SandboxConfig:
    workers: int = 4
    """Session processes kept forked and ready, and the number of cells that may run at once."""
    timeout: float = 10.0
    """Wall-clock seconds per call (the 1st-place AIMO2 setting)."""
    cpu_seconds: float | None = None
    """CPU seconds per call (default: ``timeout``)."""
    memory_mb: int = 1024
    output_limit: int = 1000
    cut_marker: str = DEFAULT_CUT_MARKER
    max_sessions: int = 64
    """Named sessions kept alive at once; the least recently used idle one is evicted beyond this."""
    file_mb: int = 16
    max_processes: int = 64
    recursion_limit: int = 10_000
    show_last_expression: bool = False
    """Print the value of a cell's final expression, as a notebook does."""
    grace: float = 0.5
    """Seconds after the deadline before the process is killed from outside."""
    landlock: bool = True
    self_test: bool = True
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    warmup: str = DEFAULT_WARMUP
    prelude: str = ""
    """Code run in every new session before its first cell, silently (its names are the session's:
    e.g. :data:`HARMONY_PRELUDE`); a failing prelude is reported in the first cell's stderr."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"sandbox workers must be >= 1, got {self.workers}")
        if self.timeout <= 0:
            raise ValueError(f"sandbox timeout must be > 0, got {self.timeout}")
        if self.memory_mb < 64:
            raise ValueError(f"sandbox memory_mb must be >= 64, got {self.memory_mb}")
        if self.max_sessions < 1:
            raise ValueError(f"sandbox max_sessions must be >= 1, got {self.max_sessions}")


def _zombie(pid: int) -> bool:
    """A process that exited and waits to be reaped (its state in ``/proc`` is Z): dead for our purposes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")


@dataclass
class _Proc:
    pid: int
    conn: Connection
    dir: str
    calls: int = 0

    def alive(self) -> bool:
        """Whether a spare can still take code: a spare never speaks first, so a readable connection means
        its end closed (the process died, or the zygote that forked it was killed with its children)."""
        try:
            if self.conn.poll(0):
                return False
            os.kill(self.pid, 0)
        except (OSError, EOFError, ValueError):
            return False
        return not _zombie(self.pid)

    def kill(self) -> None:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
                kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class SandboxStats:
    calls: int = 0
    spawned: int = 0
    killed: int = 0
    zygote_restarts: int = 0
    spawn_failures: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


REFILL_BACKOFF_S = (0.2, 5.0)
"""First and longest wait between failed attempts to fork a spare session process."""
MAX_EVENTS = 200
"""Problems kept for :meth:`Sandbox.drain_events` (the oldest are dropped first)."""


class Sandbox:
    """Run model-written Python: ``with Sandbox() as sb: sb.run(code, session="s1")``."""

    def __init__(self, workers: int | None = None, timeout: float | None = None,
                 memory_mb: int | None = None, *, config: SandboxConfig | None = None, **overrides) -> None:
        cfg = config or SandboxConfig()
        given = {"workers": workers, "timeout": timeout, "memory_mb": memory_mb, **overrides}
        self.config = replace(cfg, **{k: v for k, v in given.items() if v is not None})
        self.stats = SandboxStats()
        self.landlock_abi = 0
        self._root = ""
        self._lock = threading.Lock()
        self._zlock = threading.Lock()
        self._spares: list[_Proc] = []
        self._sessions: OrderedDict[str, _Proc] = OrderedDict()
        self._session_locks: dict[str, threading.Lock] = {}
        self._lost: set[str] = set()
        self._slots = threading.BoundedSemaphore(self.config.workers)
        self._refill = threading.Condition()
        self._closed = True
        self._zygote: subprocess.Popen | None = None
        self._ctrl: socket.socket | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._refiller: threading.Thread | None = None
        self._events: deque[dict] = deque(maxlen=MAX_EVENTS)
        self._zygote_log = ""

    # --- problems the sandbox survived -----------------------------------------------------------

    def _event(self, what: str, error: str) -> None:
        """Log a problem and keep it for the run records (:meth:`drain_events`)."""
        log.warning("sandbox: %s: %s", what, error)
        with self._lock:
            self._events.append({"what": f"sandbox {what}", "error": error, "time": time.time()})

    def drain_events(self) -> list[dict]:
        """Problems since the last call (refill failures, zygote restarts with its stderr, preload or
        warm-up failures), oldest first; the session writes them to the run records."""
        with self._lock:
            out = list(self._events)
            self._events.clear()
        return out

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if not self._closed:
            return self
        self._root = tempfile.mkdtemp(prefix="aimo-sandbox-")
        self._closed = False
        self._start_zygote()
        self._executor = ThreadPoolExecutor(max_workers=max(32, 2 * self.config.workers),
                                            thread_name_prefix="sandbox")
        self._refiller = threading.Thread(target=self._refill_loop, name="sandbox-refill", daemon=True)
        self._refiller.start()
        if self.config.self_test:
            failures = self_test(self)
            if failures:
                self.shutdown()
                raise SandboxError("sandbox limits are not enforced on this OS: " + "; ".join(failures))
        return self

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Kill every session process and the zygote; remove all temp dirs."""
        if self._closed:
            return
        self._closed = True
        with self._refill:
            self._refill.notify_all()
        with self._lock:
            procs = self._spares + list(self._sessions.values())
            self._spares, self._sessions = [], OrderedDict()
        for p in procs:
            p.kill()
        self._stop_zygote()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._root, ignore_errors=True)

    def close(self, session: str) -> None:
        """End a named session: kill its process and delete its files."""
        with self._lock:
            proc = self._sessions.pop(session, None)
            self._lost.discard(session)
            lock = self._session_locks.get(session)
            if lock is not None and not lock.locked():
                del self._session_locks[session]
        if proc is not None:
            proc.kill()
            self._count(killed=1)

    @property
    def sessions(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def pids(self) -> list[int]:
        """Process ids of the zygote and every live session process (for health checks)."""
        with self._lock:
            pids = [p.pid for p in self._spares] + [p.pid for p in self._sessions.values()]
        if self._zygote is not None and self._zygote.poll() is None:
            pids.append(self._zygote.pid)
        return pids

    # --- running code ---------------------------------------------------------------------------

    def run(self, code: str, session: str | None = None, *, timeout: float | None = None) -> RunResult:
        """Run ``code``; with ``session`` in that session's namespace. Never raises for the code's sake."""
        if self._closed:
            raise SandboxError("sandbox is not running: use `with Sandbox() as sb:` or call start()")
        if not isinstance(code, str):
            return RunResult(Status.ERROR, "", f"sandbox: code must be str, not {type(code).__name__}", 0.0)
        limit = float(timeout or self.config.timeout)
        lock = self._session_lock(session) if session is not None else contextlib.nullcontext()
        with lock, self._slots:
            start = time.perf_counter()
            proc, restarted = self._proc_for(session)
            result, dead = self._call(proc, code, limit, start, restarted)
            if session is None or dead:
                self._discard(proc, session, lost=dead)
        self._count(calls=1, status=result.status.value)
        return result

    async def arun(self, code: str, session: str | None = None, *, timeout: float | None = None) -> RunResult:
        """``run`` for asyncio callers: the call waits in a thread, the event loop keeps going."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.run(code, session, timeout=timeout))

    # --- internals --------------------------------------------------------------------------------

    def _count(self, *, calls: int = 0, killed: int = 0, spawned: int = 0, spawn_failures: int = 0,
               status: str | None = None) -> None:
        with self._lock:
            self.stats.calls += calls
            self.stats.killed += killed
            self.stats.spawned += spawned
            self.stats.spawn_failures += spawn_failures
            if status is not None:
                self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1

    def _call(self, proc: _Proc, code: str, limit: float, start: float,
              restarted: bool) -> tuple[RunResult, bool]:
        """One round trip; the flag says whether the process is gone (killed or died)."""
        cfg = self.config
        call = {"code": code, "timeout": limit, "cpu_seconds": cfg.cpu_seconds or limit,
                "output_limit": cfg.output_limit, "cut_marker": cfg.cut_marker,
                "show_last": cfg.show_last_expression}
        proc.calls += 1
        try:
            proc.conn.send(call)
            if proc.conn.poll(limit + cfg.grace):
                reply = proc.conn.recv()
                return RunResult(Status(reply["status"]), reply["stdout"], reply["stderr"],
                                 time.perf_counter() - start, restarted), False
            status, message = Status.TIMEOUT, (
                f"TimeoutError: the code exceeded its time limit of {limit:g} s and was killed")
        except (EOFError, OSError, BrokenPipeError):
            status, message = Status.KILLED, (
                "sandbox: the code's process died (crash, os._exit, or killed by the OS)")
        return RunResult(status, "", message, time.perf_counter() - start, restarted), True

    def _session_lock(self, session: str) -> threading.Lock:
        with self._lock:
            return self._session_locks.setdefault(session, threading.Lock())

    def _proc_for(self, session: str | None) -> tuple[_Proc, bool]:
        restarted = False
        if session is not None:
            with self._lock:
                proc = self._sessions.get(session)
                if proc is not None:
                    self._sessions.move_to_end(session)
                    return proc, False
                restarted = session in self._lost
                self._lost.discard(session)
        proc = self._take_spare()
        if session is not None:
            evicted = None
            with self._lock:
                self._sessions[session] = proc
                if len(self._sessions) > self.config.max_sessions:
                    for name in self._sessions:
                        lock = self._session_locks.get(name)
                        if name != session and (lock is None or not lock.locked()):
                            evicted = self._sessions.pop(name)
                            self._lost.add(name)
                            break
            if evicted is not None:
                evicted.kill()
                self._count(killed=1)
        return proc, restarted

    def _discard(self, proc: _Proc, session: str | None, *, lost: bool) -> None:
        if session is not None:
            with self._lock:
                if self._sessions.get(session) is proc:
                    del self._sessions[session]
                    if lost:
                        self._lost.add(session)
        proc.kill()
        self._count(killed=1)
        with self._refill:
            self._refill.notify()

    def _take_spare(self) -> _Proc:
        """A live spare, else a new process: spares killed under the pool (the zygote and its children
        killed together) are dropped, never handed out."""
        while True:
            with self._lock:
                proc = self._spares.pop() if self._spares else None
            if proc is None or proc.alive():
                break
            proc.kill()
            self._count(killed=1)
        with self._refill:
            self._refill.notify()
        return proc if proc is not None else self._spawn()

    def _refill_loop(self) -> None:
        """Keep ``workers`` spare session processes forked; a failing fork is logged, recorded and retried
        with a growing pause (never a silent busy loop)."""
        first, longest = REFILL_BACKOFF_S
        pause = first
        while not self._closed:
            with self._lock:
                missing = self.config.workers - len(self._spares)
            if missing > 0:
                try:
                    proc = self._spawn()
                except Exception as exc:
                    if self._closed:  # shutting down: the zygote is gone on purpose
                        return
                    self._count(spawn_failures=1)
                    self._event("refill failed", f"{type(exc).__name__}: {exc} (retrying in {pause:.1f} s)")
                    with self._refill:
                        self._refill.wait(timeout=pause)
                    pause = min(pause * 2, longest)
                    continue
                pause = first
                with self._lock:
                    if self._closed:
                        proc.kill()
                        return
                    self._spares.append(proc)
                continue
            with self._refill:
                self._refill.wait(timeout=1.0)

    def _spawn(self) -> _Proc:
        cfg = self.config
        req = {"dir": "", "landlock": cfg.landlock, "recursion_limit": cfg.recursion_limit, "prelude": cfg.prelude,
               "limits": asdict(Limits(memory_mb=cfg.memory_mb, file_mb=cfg.file_mb,
                                       max_processes=cfg.max_processes))}
        for attempt in range(3):
            req["dir"] = tempfile.mkdtemp(prefix="s-", dir=self._root)
            ours, theirs = socket.socketpair()
            used = None
            try:
                with self._zlock:
                    if self._zygote is None or self._zygote.poll() is not None or self._ctrl is None:
                        self._restart_zygote()
                    used = self._zygote
                    assert self._ctrl is not None
                    socket.send_fds(self._ctrl, [json.dumps(req).encode()], [theirs.fileno()])
                    reply = json.loads(self._ctrl.recv(4096) or b"{}")
                theirs.close()
                if "pid" not in reply:
                    raise SandboxError(f"zygote refused to fork: {reply}")
                conn = Connection(ours.detach())
                proc = _Proc(pid=int(reply["pid"]), conn=conn, dir=req["dir"])
                if not conn.poll(30):
                    proc.kill()
                    raise SandboxError("session process did not start within 30 s")
                hello = conn.recv()
                self.landlock_abi = int(hello.get("landlock", 0))
                self._count(spawned=1)
                return proc
            except (OSError, EOFError, json.JSONDecodeError, SandboxError) as exc:
                theirs.close()
                ours.close()
                shutil.rmtree(req["dir"], ignore_errors=True)
                with self._zlock:
                    if self._zygote is used:  # another thread may have replaced it meanwhile: keep that one
                        self._restart_zygote()
                if attempt == 2:
                    raise SandboxError(f"could not start a sandbox session process: {exc}") from exc
        raise AssertionError("unreachable")

    def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = str(Path(__file__).resolve().parents[3])
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([package_root, *[p for p in sys.path if p]]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "AIMO_SANDBOX_PRELOAD": ",".join(self.config.preload),
            "AIMO_SANDBOX_WARMUP": self.config.warmup,
        }
        # The zygote's stderr goes to a file (session processes send theirs to /dev/null themselves): when
        # it dies, the reason is in the restart's event, not lost.
        self._zygote_log = os.path.join(self._root, "zygote.stderr")
        with open(self._zygote_log, "ab") as err:
            self._zygote = subprocess.Popen(
                [sys.executable, "-m", "kit.runtime.sandbox.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, env=env, cwd=self._root, close_fds=True,
            )
        theirs.close()
        ours.settimeout(60)
        try:
            hello = json.loads(ours.recv(65536) or b"{}")
        except (OSError, json.JSONDecodeError) as exc:
            self._zygote.kill()
            raise SandboxError(f"sandbox zygote did not start: {exc}; stderr: {self._zygote_stderr()}") from exc
        if not hello.get("ready"):
            self._zygote.kill()
            raise SandboxError(f"sandbox zygote did not start (exit code {self._zygote.poll()}); "
                               f"stderr: {self._zygote_stderr()}")
        for problem in hello.get("problems", []):
            self._event("preload", problem)
        ours.settimeout(30)
        self._ctrl = ours

    def _zygote_stderr(self, limit: int = 2000) -> str:
        """The tail of what the zygote wrote to stderr ("" when nothing)."""
        try:
            with open(self._zygote_log, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(fh.tell() - limit, 0))
                return fh.read().decode("utf-8", errors="replace").strip()
        except OSError:
            return ""

    def _stop_zygote(self) -> None:
        if self._ctrl is not None:
            with contextlib.suppress(OSError):
                self._ctrl.close()
            self._ctrl = None
        if self._zygote is not None:
            with contextlib.suppress(OSError):
                self._zygote.kill()
            with contextlib.suppress(Exception):
                self._zygote.wait(timeout=5)
            self._zygote = None

    def _restart_zygote(self) -> None:
        code = self._zygote.poll() if self._zygote is not None else None
        self._stop_zygote()
        if self._closed:
            raise SandboxError("sandbox is shut down")
        self.stats.zygote_restarts += 1
        self._event("zygote restart", f"exit code {code}; stderr: {self._zygote_stderr() or '(empty)'}")
        self._start_zygote()
