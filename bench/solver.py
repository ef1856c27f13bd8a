"""Benchmark: the solver's own CPU cost, and what early stopping saves, on real recorded text.

1. Harness overhead. The replay engine plays the SkyThought-32B AIME24 samples (11 per problem) at the
   4×L4 7B-AWQ speed model in virtual time. Under cProfile we attribute CPU time to the kit's own code
   (solver, answers, voting, records, sandbox orchestration — plus the built-ins and stdlib calls made
   directly from them) and leave out the replay engine's simulation cost. Reported: kit CPU seconds per
   problem as a fraction of the problem's (virtual) L4 wall time. Target (issue 4): < 1 %.
2. Early stopping. The same 30 problems with the default stop rules vs no early stop (vote over all 11
   samples): generated tokens, virtual time and correct answers, side by side.

    .venv/bin/python bench/solver.py
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

from kit.offline.traces import load_pool
from kit.runtime.profiles import get_profile
from kit.runtime.prompts import COT
from kit.runtime.records import RunRecorder
from kit.runtime.solver import Solver, SolverConfig
from kit.sim.replay import ReplayConfig, ReplayEngine

KIT = str(Path(__file__).resolve().parents[1] / "kit")
SIMULATION = (str(Path(KIT) / "sim") + "/",)
"""The replay engine and its virtual clock (the simulation layer): what stands in for the GPU."""


def _is_kit(func: tuple) -> bool:
    filename = func[0]
    return filename.startswith(KIT) and not filename.startswith(SIMULATION)


def kit_cpu_seconds(stats: pstats.Stats) -> float:
    """Self time of kit functions + time of non-kit callees charged to kit callers."""
    total = 0.0
    for func, (_, _, tt, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if _is_kit(func):
            total += tt
            continue
        if func[0].startswith(SIMULATION):
            continue
        for caller, (_, _, ctt, cct) in callers.items():
            if _is_kit(caller):
                total += ctt if func[0] == "~" else cct
    return total


async def solve_all(problems: dict, config: SolverConfig, recorder: RunRecorder | None):
    profile = get_profile("aimo2")
    rows = []
    for pid, samples in problems.items():
        engine = ReplayEngine.from_samples(samples, ReplayConfig(chunk_tokens=16))
        solver = Solver(engine, config, profile=profile, recorder=recorder)
        start = engine.clock.now()
        result = await solver.solve(pid, samples[0].problem, gold=profile.to_answer(samples[0].gold))
        rows.append((pid, result, engine.clock.now() - start, profile.to_answer(samples[0].gold)))
        await engine.close()
    return rows


def main() -> int:
    pool = load_pool("skythought_aime24")
    problems: dict[str, list] = {}
    for s in pool:
        problems.setdefault(s.problem_id, []).append(s)
    base = SolverConfig(n_samples=11, max_tokens=200_000, prompts=(COT,), stop_after_reasoning=False)
    early = base
    full = SolverConfig(**{**base.__dict__, "early_stop": False})

    out = Path("runs/bench-solver")
    out.mkdir(parents=True, exist_ok=True)
    recorder = RunRecorder(out / "records.jsonl")
    profiler = cProfile.Profile()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    profiler.enable()
    rows_early = asyncio.run(solve_all(problems, early, recorder))
    profiler.disable()
    cpu_total, real = time.process_time() - cpu0, time.perf_counter() - wall0
    recorder.close()
    stats = pstats.Stats(profiler)
    kit_cpu = kit_cpu_seconds(stats)
    virtual = sum(r[2] for r in rows_early)

    t0 = time.perf_counter()
    rows_full = asyncio.run(solve_all(problems, full, None))
    real_full = time.perf_counter() - t0

    n = len(rows_early)
    print(f"pool: SkyThought-32B AIME24, {n} problems x 11 recorded samples; speed model: 4xL4 7B-AWQ")
    print()
    print("1. Harness overhead (with early stop, records written, under cProfile)")
    print(f"   simulated L4 wall time      {virtual:10.1f} s  ({virtual / n:.1f} s per problem)")
    print(f"   kit CPU time (attributed)   {kit_cpu:10.3f} s  ({kit_cpu / n * 1000:.1f} ms per problem)")
    print(f"   whole process CPU           {cpu_total:10.3f} s  (incl. replay simulation; real {real:.1f} s)")
    print(f"   kit CPU / wall time         {kit_cpu / virtual * 100:10.4f} %   (target < 1 %)")
    top = sorted(((v[2], k) for k, v in stats.stats.items() if _is_kit(k)), reverse=True)[:5]  # type: ignore
    print("   top kit functions (self time): " + ", ".join(f"{Path(k[0]).name}:{k[2]} {t:.3f}s" for t, k in top))
    print()
    tok_e = sum(r[1].tokens for r in rows_early)
    tok_f = sum(r[1].tokens for r in rows_full)
    vt_f = sum(r[2] for r in rows_full)
    ok_e = sum(r[1].answer == r[3] for r in rows_early)
    ok_f = sum(r[1].answer == r[3] for r in rows_full)
    fin_e = sum(r[1].samples_finished for r in rows_early)
    print("2. Early stopping vs voting over all 11 samples")
    print(f"   {'':22}{'tokens':>12}{'L4 time (s)':>14}{'samples':>10}{'correct':>10}")
    print(f"   {'early stop (default)':22}{tok_e:>12,}{virtual:>14.1f}{fin_e:>10}{ok_e:>7}/{n}")
    print(f"   {'no early stop':22}{tok_f:>12,}{vt_f:>14.1f}{n * 11:>10}{ok_f:>7}/{n}")
    print(f"   tokens saved: {1 - tok_e / tok_f:.1%}; time saved: {1 - virtual / vt_f:.1%}; "
          f"accuracy {ok_e}/{n} vs {ok_f}/{n}")
    reasons: dict[str, int] = {}
    for r in rows_early:
        key = r[1].reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    print(f"   stop reasons: {reasons}; real time of the two runs: {real:.1f} s, {real_full:.1f} s")
    return 0 if kit_cpu / virtual < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
