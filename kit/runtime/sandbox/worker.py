"""Sandbox processes: the zygote (warm fork server) and the session processes it forks.

The zygote is started once per :class:`~kit.runtime.sandbox.Sandbox` with ``python -m kit.runtime.sandbox.worker``,
imports the maths stack (so a cell's ``import sympy`` costs nothing), and forks a session process per
request. A session process confines itself (``kit.runtime.sandbox.confine``), then runs cells in one namespace —
like a notebook kernel — until its connection closes. Being single-threaded, the zygote forks safely,
which the host process (vLLM, CUDA threads) could not.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import linecache
import os
import signal
import socket
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from kit.runtime.sandbox.confine import Limits, apply_landlock, apply_rlimits, install_audit_policy
from kit.runtime.sandbox.result import DEFAULT_CUT_MARKER, HeadTailBuffer, Status, cut_middle

STDERR_LIMIT = 2000
TRACEBACK_FRAMES = 3


class CellInterrupt(BaseException):
    """Raised inside the cell when its wall-clock (SIGALRM) or CPU (SIGPROF) budget is spent.

    A ``BaseException`` so that the cell's own ``except Exception`` does not swallow it.
    """


def _on_alarm(signum: int, frame: Any) -> None:
    raise CellInterrupt("wall-clock" if signum == signal.SIGALRM else "CPU")


def _format_error(exc: BaseException, root: str) -> str:
    """Traceback trimmed to the cell's last frames (plus the frame that raised), temp paths redacted."""
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        cell = [f for f in frames if f.filename.startswith("<cell")]
        keep = cell[-TRACEBACK_FRAMES:]
        own = os.path.dirname(os.path.abspath(__file__))
        if frames and frames[-1] not in keep and not frames[-1].filename.startswith(own):
            keep.append(frames[-1])
        text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(keep))
        text += "".join(traceback.format_exception_only(type(exc), exc))
    return text.replace(root + os.sep, "").replace(root, ".")


def _run_cell(code: str, ns: dict, name: str, show_last: bool) -> None:
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    tree = ast.parse(code, name, "exec")
    last = None
    if show_last and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), ns)
    if last is not None:
        value = eval(compile(last, name, "eval"), ns)
        if value is not None:
            print(repr(value))


def execute(call: dict, ns: dict, root: str, counter: int) -> dict:
    """Run one cell with its budgets; never raises."""
    limit = int(call.get("output_limit", 1000))
    marker = call.get("cut_marker", DEFAULT_CUT_MARKER)
    out = HeadTailBuffer(max(limit, 1))
    err = HeadTailBuffer(STDERR_LIMIT)
    saved = sys.stdout, sys.stderr
    status = Status.OK
    error_text = ""
    start = time.perf_counter()
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.signal(signal.SIGPROF, _on_alarm)
        sys.stdout, sys.stderr = out, err
        signal.setitimer(signal.ITIMER_PROF, float(call.get("cpu_seconds", call["timeout"])))
        signal.setitimer(signal.ITIMER_REAL, float(call["timeout"]))
        try:
            _run_cell(call["code"], ns, f"<cell-{counter}>", bool(call.get("show_last", False)))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.setitimer(signal.ITIMER_PROF, 0)
    except CellInterrupt as exc:
        status = Status.TIMEOUT
        error_text = f"TimeoutError: the code exceeded its {exc} time limit of {call['timeout']:g} s"
    except MemoryError:
        status = Status.MEMORY
        error_text = "MemoryError: the code exceeded the sandbox memory limit"
    except SystemExit as exc:
        status = Status.ERROR
        error_text = f"SystemExit: {exc.code}"
    except BaseException as exc:
        status = Status.ERROR
        try:
            error_text = _format_error(exc, root)
        except BaseException:
            error_text = f"{type(exc).__name__}"
    finally:
        sys.stdout, sys.stderr = saved
    seconds = time.perf_counter() - start
    stdout, cut = out.getvalue(limit, marker)
    stderr_text, _ = err.getvalue(STDERR_LIMIT)
    stderr, _ = cut_middle((stderr_text + error_text).strip("\n"), STDERR_LIMIT, marker)
    if status is Status.OK and cut:
        status = Status.TRUNCATED
    return {"status": status.value, "stdout": stdout, "stderr": stderr.replace(root, "."), "seconds": seconds}


def session_main(fd: int, req: dict) -> None:
    """Body of a forked session process: confine, then serve cells until the connection closes."""
    os.setsid()
    conn = Connection(fd)
    root = req["dir"]
    os.chdir(root)
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.environ.clear()
    os.environ.update({"PATH": os.defpath, "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"})
    sys.set_int_max_str_digits(0)
    sys.setrecursionlimit(int(req.get("recursion_limit", 10_000)))
    apply_rlimits(Limits(**req["limits"]))
    abi = apply_landlock(root) if req.get("landlock", True) else 0
    install_audit_policy(root)
    ns: dict = {"__name__": "__main__", "__builtins__": builtins}
    prelude_error = _run_prelude(req.get("prelude") or "", ns)
    conn.send({"ready": True, "landlock": abi, "pid": os.getpid()})
    counter = 0
    while True:
        try:
            call = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        counter += 1
        reply = execute(call, ns, root, counter)
        if prelude_error:
            reply["stderr"] = (prelude_error + "\n" + reply["stderr"]).strip("\n")
            prelude_error = ""
        conn.send(reply)


def _run_prelude(code: str, ns: dict) -> str:
    """Run the session prelude in its namespace; what failed, or ""."""
    if not code.strip():
        return ""
    try:
        exec(compile(code, "<prelude>", "exec"), ns)
    except BaseException as exc:
        return f"[sandbox prelude failed: {type(exc).__name__}: {exc}]"[:300]
    return ""


def zygote_main(ctrl_fd: int) -> None:
    """Import the maths stack once, then fork a session per request on the control socket."""
    problems = []  # reported in the hello: the pool logs them and puts them in the run records
    preload = os.environ.get("AIMO_SANDBOX_PRELOAD", "math").split(",")
    for name in filter(None, preload):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing module must not stop the zygote: the cell's import fails later
            problems.append(f"cannot import {name}: {type(exc).__name__}: {exc}"[:300])
    warmup = os.environ.get("AIMO_SANDBOX_WARMUP", "")
    if warmup:
        try:
            exec(compile(warmup, "<warmup>", "exec"), {"__name__": "__warmup__"})
        except Exception as exc:
            problems.append(f"warm-up failed: {type(exc).__name__}: {exc}"[:300])
    ctrl = socket.socket(fileno=ctrl_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    ctrl.send(json.dumps({"ready": True, "pid": os.getpid(), "problems": problems}).encode())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, 65536, 1)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)
        req = json.loads(msg)
        if not fds:
            ctrl.send(json.dumps({"error": "no session socket received"}).encode())
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ctrl.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                session_main(fds[0], req)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        ctrl.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    zygote_main(int(sys.argv[1]))
