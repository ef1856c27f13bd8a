"""Benchmark: the TIR sandbox pool against a fresh ``python file.py`` per call.

What: per-call latency (p50/p99, measured by the caller around ``Sandbox.run``) of a trivial snippet and
a sympy snippet in three set-ups, side by side in one run:

* pool, ``session=None``: each call gets a fresh confined process forked from the warm zygote;
* pool, named session: the same warm process (and namespace) serves every call;
* baseline: the snippet written to a temp file after the imports the pool preloads, run with
  ``subprocess.run([sys.executable, file])`` — what a harness without a warm pool pays per call.

Then throughput (cells/s) with 16 concurrent sessions driven from asyncio (``Sandbox.arun``), each
session a 3-cell sympy trajectory, opened, run and closed repeatedly; and the same trajectories through
the baseline with 16 ``asyncio.create_subprocess_exec`` processes in flight. A stateless baseline cannot
keep variables between cells, so cell *k* runs cells 1..k concatenated (how stateless harnesses emulate
a notebook).

Why: the sandbox exists so that a tool call costs a message round trip instead of an interpreter start
plus ``import sympy``; the issue's targets are a pool p50 of at most 10 ms for the trivial snippet and a
pool at least 20x faster than the baseline (p50) for the sympy snippet. Both are checked and printed.
Every call's output is checked too, so a fast but wrong sandbox fails loudly (exit 1); missing a target
does not change the exit code.

    .venv/bin/python bench/sandbox.py [--iters 200] [--baseline-iters 20] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kit.runtime.sandbox import Sandbox, Status
from kit.runtime.sandbox.pool import DEFAULT_PRELOAD

PRELOAD_LINE = "import " + ", ".join(DEFAULT_PRELOAD) + "\n"
SNIPPETS: dict[str, tuple[str, str]] = {  # name -> (code, expected stdout)
    "trivial": ("print(1+1)", "2\n"),
    "sympy": ("import sympy as sp\nx=sp.symbols('x')\nprint(sp.factor(x**6-1))",
              "(x - 1)*(x + 1)*(x**2 - x + 1)*(x**2 + x + 1)\n"),
}
TRAJECTORY: tuple[str, ...] = (  # a small 3-cell TIR trajectory: define, solve, use the solution
    "import sympy as sp\nx = sp.symbols('x')\nf = x**3 - 6*x**2 + 11*x - 6",
    "roots = sp.solve(f, x)\nprint(roots)",
    "print(sum(r**2 for r in roots))",
)
TRAJECTORY_OUT: tuple[str, ...] = ("", "[1, 2, 3]\n", "14\n")
# The pool caps BLAS threads in its processes; the baseline gets the same caps, so neither side is
# slowed (or sped up) by thread start-up the other does not pay.
BASELINE_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TARGET_P50_MS = 10.0
TARGET_SPEEDUP = 20.0


class BenchError(RuntimeError):
    """A call returned the wrong output: the figures would be meaningless."""


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    n: int


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(seconds: Sequence[float]) -> Latency:
    return Latency(percentile(seconds, 50) * 1000, percentile(seconds, 99) * 1000, len(seconds))


def check(got: str, expected: str, where: str) -> None:
    if got != expected:
        raise BenchError(f"{where}: expected {expected!r}, got {got!r}")


def time_calls(call: Callable[[], str], expected: str, iters: int, warmup: int, where: str) -> Latency:
    """Wall-clock latency of ``call`` as its caller sees it, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        check(call(), expected, where)
    samples: list[float] = []
    for _ in range(iters):
        start = time.perf_counter()
        out = call()
        samples.append(time.perf_counter() - start)
        check(out, expected, where)
    return summarize(samples)


def pool_call(sb: Sandbox, code: str, session: str | None) -> Callable[[], str]:
    def call() -> str:
        r = sb.run(code, session=session)
        if r.status is not Status.OK:
            raise BenchError(f"pool call failed: {r.status.value}: {r.stderr}")
        return r.stdout

    return call


def write_script(folder: str, name: str, code: str) -> str:
    path = os.path.join(folder, f"snippet_{name}.py")  # never "sympy.py": it would shadow sympy
    Path(path).write_text(PRELOAD_LINE + code + "\n", encoding="utf-8")
    return path


def baseline_call(path: str) -> Callable[[], str]:
    def call() -> str:
        done = subprocess.run([sys.executable, path], capture_output=True, text=True, env=BASELINE_ENV,
                              timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"baseline call failed ({done.returncode}): {done.stderr[-500:]}")
        return done.stdout

    return call


async def pool_throughput(sb: Sandbox, sessions: int, trajectories: int) -> tuple[int, float]:
    """``sessions`` concurrent asyncio tasks, each running ``trajectories`` 3-cell trajectories."""

    async def worker(w: int) -> int:
        cells = 0
        for t in range(trajectories):
            name = f"bench-{w}-{t}"
            for code, expected in zip(TRAJECTORY, TRAJECTORY_OUT, strict=True):
                r = await sb.arun(code, session=name)
                if r.status is not Status.OK:
                    raise BenchError(f"pool trajectory cell failed: {r.status.value}: {r.stderr}")
                check(r.stdout, expected, "pool trajectory")
                cells += 1
            sb.close(name)
        return cells

    start = time.perf_counter()
    done = await asyncio.gather(*(worker(w) for w in range(sessions)))
    return sum(done), time.perf_counter() - start


async def baseline_throughput(folder: str, sessions: int, trajectories: int) -> tuple[int, float]:
    """The same trajectories as fresh processes, ``sessions`` in flight; cell k runs cells 1..k."""
    paths = [write_script(folder, f"traj{k}", "\n".join(TRAJECTORY[: k + 1])) for k in range(len(TRAJECTORY))]
    expected = ["".join(TRAJECTORY_OUT[: k + 1]) for k in range(len(TRAJECTORY))]

    async def worker() -> int:
        cells = 0
        for _ in range(trajectories):
            for path, want in zip(paths, expected, strict=True):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    env=BASELINE_ENV)
                out, err = await proc.communicate()
                if proc.returncode != 0:
                    raise BenchError(f"baseline trajectory cell failed: {err.decode()[-500:]}")
                check(out.decode(), want, "baseline trajectory")
                cells += 1
        return cells

    start = time.perf_counter()
    done = await asyncio.gather(*(worker() for _ in range(sessions)))
    return sum(done), time.perf_counter() - start


def fmt_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200, help="timed pool calls per snippet and mode")
    ap.add_argument("--baseline-iters", type=int, default=20, help="timed baseline calls per snippet")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before each pool series")
    ap.add_argument("--workers", type=int, default=4, help="sandbox workers (cells running at once)")
    ap.add_argument("--sessions", type=int, default=16, help="concurrent sessions / processes in flight")
    ap.add_argument("--trajectories", type=int, default=20, help="3-cell trajectories per pool session")
    ap.add_argument("--baseline-trajectories", type=int, default=1,
                    help="3-cell trajectories per in-flight baseline slot")
    args = ap.parse_args(argv)

    cpus = os.cpu_count() or 1
    print(f"machine: {cpus} CPUs, Python {sys.version.split()[0]}; pool workers={args.workers}")
    latency: dict[tuple[str, str], Latency] = {}
    t0 = time.perf_counter()
    with Sandbox(workers=args.workers, timeout=30, memory_mb=1024) as sb:
        print(f"sandbox start-up (self-test included): {time.perf_counter() - t0:.2f} s, "
              f"landlock ABI {sb.landlock_abi}")
        for name, (code, expected) in SNIPPETS.items():
            latency[("pool fresh (session=None)", name)] = time_calls(
                pool_call(sb, code, None), expected, args.iters, args.warmup, f"pool fresh {name}")
            session = f"bench-latency-{name}"
            latency[("pool warm session", name)] = time_calls(
                pool_call(sb, code, session), expected, args.iters, args.warmup, f"pool session {name}")
            sb.close(session)
        with tempfile.TemporaryDirectory(prefix="aimo-bench-") as folder:
            for name, (code, expected) in SNIPPETS.items():
                latency[("baseline subprocess", name)] = time_calls(
                    baseline_call(write_script(folder, name, code)), expected, args.baseline_iters, 1,
                    f"baseline {name}")
            pool_cells, pool_s = asyncio.run(pool_throughput(sb, args.sessions, args.trajectories))
            base_cells, base_s = asyncio.run(baseline_throughput(folder, args.sessions, args.baseline_trajectories))
        stats = sb.stats

    modes = ["pool fresh (session=None)", "pool warm session", "baseline subprocess"]
    widths = [26, 10, 10, 6, 10, 10, 6]
    print("\nLatency per call (ms, wall clock at the caller)")
    print(fmt_row(["mode", "trivial p50", "p99", "n", "sympy p50", "p99", "n"], widths))
    for mode in modes:
        t, s = latency[(mode, "trivial")], latency[(mode, "sympy")]
        print(fmt_row([mode, f"{t.p50_ms:.2f}", f"{t.p99_ms:.2f}", str(t.n), f"{s.p50_ms:.2f}",
                       f"{s.p99_ms:.2f}", str(s.n)], widths))

    print("\nSpeed-up, baseline p50 / pool p50")
    for mode in modes[:2]:
        ratios = [latency[("baseline subprocess", n)].p50_ms / latency[(mode, n)].p50_ms for n in SNIPPETS]
        print(f"  {mode:<26} trivial {ratios[0]:8.1f}x   sympy {ratios[1]:8.1f}x")

    pool_rate, base_rate = pool_cells / pool_s, base_cells / base_s
    print(f"\nThroughput, {args.sessions} concurrent 3-cell trajectories (cells/s)")
    print(f"  pool via arun      {pool_rate:9.1f}  ({pool_cells} cells in {pool_s:.2f} s)")
    print(f"  baseline processes {base_rate:9.1f}  ({base_cells} cells in {base_s:.2f} s; cell k re-runs cells 1..k)")
    print(f"  ratio pool / baseline: {pool_rate / base_rate:.1f}x")
    print(f"  pool stats: {stats.calls} calls, {stats.spawned} processes spawned, {stats.killed} killed")

    print("\nTargets (issue)")
    for mode in modes[:2]:
        p50 = latency[(mode, "trivial")].p50_ms
        ok = p50 <= TARGET_P50_MS
        print(f"  [{'met' if ok else 'MISSED'}] {mode}: trivial p50 {p50:.2f} ms <= {TARGET_P50_MS:g} ms")
    for mode in modes[:2]:
        ratio = latency[("baseline subprocess", "sympy")].p50_ms / latency[(mode, "sympy")].p50_ms
        ok = ratio >= TARGET_SPEEDUP
        print(f"  [{'met' if ok else 'MISSED'}] {mode}: sympy snippet {ratio:.1f}x faster than baseline "
              f"(>= {TARGET_SPEEDUP:g}x)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/sandbox.py: wrong output, figures discarded: {exc}", file=sys.stderr)
        sys.exit(1)
