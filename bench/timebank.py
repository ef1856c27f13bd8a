"""Time policies on the whole pool family (issue 15): ``ours`` against the best baseline in every (pool,
hardware) cell, paired on the same competitions, and the overrun check with throughput dropping 3x mid-run.

    .venv/bin/python bench/timebank.py [--runs 200] [--overrun-runs 1000]

Baselines: second_place, linspace, equal and aimo3_baseline (AIMO2 pools on 4xL4 7B/14B speed models), and
the same four on the AIMO3-like pools on the H100 gpt-oss-120b model with 8 attempts (the KV cache's limit).
The figure per cell is ``ours - best baseline`` (problems of 50) with the 95 % CI of the paired difference;
"time binds" marks cells where the best baseline or ours spends over 90 % of the 5 hours. The pools are every
recorded pool the repo bundles and synthetic shapes none of ours' settings were chosen on (kit.sim.pools).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from kit.runtime.profiles import get_profile
from kit.runtime.schedule import make_policy
from kit.runtime.throughput import get_speed
from kit.sim.pools import family
from kit.sim.simulate import bound_report, hardware_max_seqs, monte_carlo

HARDWARE = {"aimo2": ("l4x4-7b-awq", "l4x4-14b-awq"), "aimo3": ("h100-gpt-oss-120b",)}
BASELINES = ("second_place", "linspace", "equal", "aimo3_baseline")
STARTUP = 600.0


def cell(job: tuple[str, str, str, int]) -> dict:
    profile, pool_name, hw, runs = job
    pool = family(profile)[pool_name]()
    speed, seqs = get_speed(hw), hardware_max_seqs(hw)
    reports = {name: monte_carlo(pool, lambda n=name: make_policy(n), runs=runs, profile=profile, speed=speed,
                                 max_num_seqs=seqs, second_run=False, startup_seconds=STARTUP)
               for name in ("ours", *BASELINES)}
    oracle = bound_report(pool, runs=runs, profile=profile, speed=speed, startup_seconds=STARTUP)
    best = max(BASELINES, key=lambda n: reports[n].expected_score)
    diff = [a - b for a, b in zip(reports["ours"].scores, reports[best].scores, strict=True)]
    total = get_profile(profile).total_seconds
    return {"pool": pool_name, "hw": hw, "best": best, "best_score": reports[best].expected_score,
            "ours": reports["ours"].expected_score, "diff": statistics.fmean(diff),
            "half": 1.96 * statistics.stdev(diff) / math.sqrt(len(diff)),
            "binds": max(reports[best].mean_seconds, reports["ours"].mean_seconds) > 0.9 * total,
            "oracle": oracle.expected_score, "ours_s": reports["ours"].mean_seconds}


def overruns(job: tuple[str, str, str, int]) -> tuple[str, str, dict[str, int]]:
    profile, pool_name, hw, runs = job
    pool = family(profile)[pool_name]()
    total = get_profile(profile).total_seconds
    out = {}
    for name in ("ours", *BASELINES):
        r = monte_carlo(pool, lambda n=name: make_policy(n), runs=runs, profile=profile, speed=get_speed(hw),
                        max_num_seqs=hardware_max_seqs(hw), second_run=False,
                        slowdown=lambda t: 3.0 if t > total / 2 else 1.0)
        out[name] = r.overruns
    return pool_name, hw, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--overrun-runs", type=int, default=1000)
    args = ap.parse_args()
    start = time.perf_counter()
    jobs = [(prof, pool, hw, args.runs) for prof in HARDWARE for pool in family(prof) for hw in HARDWARE[prof]]
    print(f"{'pool':<18}{'hardware':<19}{'best baseline':<16}{'best':>7}{'ours':>7}{'ours-best (95% CI)':>22}"
          f"{'ours/best':>10}{'oracle':>8}  time binds")
    worst = []
    with ProcessPoolExecutor(2) as ex:
        for r in ex.map(cell, jobs):
            worst.append(r["diff"])
            print(f"{r['pool']:<18}{r['hw']:<19}{r['best']:<16}{r['best_score']:>7.2f}{r['ours']:>7.2f}"
                  f"{r['diff']:>+12.2f} ± {r['half']:.2f}    {r['ours'] / r['best_score']:>8.3f}{r['oracle']:>8.2f}"
                  f"  {'yes' if r['binds'] else ''}", flush=True)
        print(f"cells {len(worst)}: ours >= best - 0.3 in {sum(d >= -0.3 for d in worst)}, "
              f"mean ours-best {statistics.fmean(worst):+.2f}")
        checks = [("aimo2", "skythought_aime24", "l4x4-14b-awq"), ("aimo2", "syn-r1-8", "l4x4-14b-awq"),
                  ("aimo2", "syn-hard", "l4x4-7b-awq"), ("aimo3", "syn-aimo3", "h100-gpt-oss-120b")]
        print(f"\noverruns of the per-call or total limit in {args.overrun_runs} competitions, throughput 3x slower "
              "from half-time on:")
        for pool, hw, out in ex.map(overruns, [(*c, args.overrun_runs) for c in checks]):
            print(f"  {pool:<18}{hw:<19}" + "  ".join(f"{n} {v}" for n, v in out.items()), flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
