"""Time policies on the whole pool family (issue 15): ``ours`` against the best baseline in every (pool,
hardware) cell, paired on the same competitions, and the overrun check with throughput dropping 3x mid-run.

    .venv/bin/python bench/timebank.py [--runs 200] [--redraws 10] [--first-draw 0] [--separation R]
                                       [--overrun-runs 1000]

Baselines: second_place, linspace, equal and aimo3_baseline (AIMO2 pools on 4xL4 7B/14B speed models), and
the same four on the AIMO3-like pools on the H100 gpt-oss-120b model with 8 attempts (the KV cache's limit).
The figure per cell is ``ours - best baseline`` (problems of 50) with the 95 % CI of the paired difference;
"time binds" marks cells where the best baseline or ours spends over 90 % of the 5 hours. The pools are every
recorded pool the repo bundles and synthetic shapes none of ours' settings were chosen on (kit.sim.pools).

A synthetic shape is played on ``--redraws`` independent draws of its problems (``family(redraw=k)``),
``runs / redraws`` competitions each: one draw of 60 problems lets a policy win or lose by luck of those
problems, which no number of competitions on them averages out. Two intervals are printed: the paired
one over competitions (sample draws) and, for synthetic shapes, the t interval over the draws' means
(problem draws too: the wider, honest one for "a pool of this shape").
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


T975 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11, 2.10,
        2.09, 2.09)
"""Student t quantiles (0.975) for 1–20 degrees of freedom; 1.96 beyond."""


def cell(job: tuple[str, str, str, int, int, int, float | None]) -> dict:
    profile, pool_name, hw, runs, redraws, first, separation = job
    draw_ids = range(first, first + max(redraws, 1)) if pool_name.startswith("syn-") else range(1)
    draws, per_draw = len(draw_ids), max(runs // len(draw_ids), 2)
    speed, seqs = get_speed(hw), hardware_max_seqs(hw)
    names = ("ours", *BASELINES)
    scores: dict[str, list[list[float]]] = {n: [] for n in (*names, "oracle")}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for k in draw_ids:
        pool = family(profile, redraw=k, separation=separation)[pool_name]()
        for name in names:
            r = monte_carlo(pool, lambda n=name: make_policy(n), runs=per_draw, profile=profile, speed=speed,
                            max_num_seqs=seqs, second_run=False, startup_seconds=STARTUP, seed=k)
            scores[name].append(r.scores)
            seconds[name].append(r.mean_seconds)
        scores["oracle"].append(bound_report(pool, runs=per_draw, profile=profile, speed=speed,
                                             startup_seconds=STARTUP, seed=k).scores)
    flat = {n: [x for d in v for x in d] for n, v in scores.items()}
    best = max(BASELINES, key=lambda n: statistics.fmean(flat[n]))
    diff = [a - b for a, b in zip(flat["ours"], flat[best], strict=True)]
    by_draw = [statistics.fmean(a) - statistics.fmean(b) for a, b in zip(scores["ours"], scores[best], strict=True)]
    draw_half = (T975[draws - 2] if draws <= 21 else 1.96) * statistics.stdev(by_draw) / math.sqrt(draws) \
        if draws > 1 else None
    total = get_profile(profile).total_seconds
    ours_s, best_s = statistics.fmean(seconds["ours"]), statistics.fmean(seconds[best])
    return {"pool": pool_name, "hw": hw, "best": best, "best_score": statistics.fmean(flat[best]),
            "ours": statistics.fmean(flat["ours"]), "diff": statistics.fmean(diff),
            "half": 1.96 * statistics.stdev(diff) / math.sqrt(len(diff)), "draw_half": draw_half,
            "binds": max(best_s, ours_s) > 0.9 * total, "oracle": statistics.fmean(flat["oracle"]), "ours_s": ours_s}


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
    ap.add_argument("--redraws", type=int, default=10, help="problem draws of each synthetic shape")
    ap.add_argument("--first-draw", type=int, default=0,
                    help="first problem draw (ours' settings were looked at on draws 0-19; 20+ are fresh)")
    ap.add_argument("--separation", type=float, default=None,
                    help="stress test: wrong samples' median length = this x correct ones' in every synthetic shape")
    ap.add_argument("--overrun-runs", type=int, default=1000)
    args = ap.parse_args()
    start = time.perf_counter()
    jobs = [(prof, pool, hw, args.runs, args.redraws, args.first_draw, args.separation)
            for prof in HARDWARE for pool in family(prof) for hw in HARDWARE[prof]]
    print(f"{'pool':<18}{'hardware':<19}{'best baseline':<16}{'best':>7}{'ours':>7}{'ours-best':>10}"
          f"{'CI runs':>9}{'CI draws':>10}{'ours/best':>10}{'oracle':>8}  time binds")
    rows = []
    with ProcessPoolExecutor(2) as ex:
        for r in ex.map(cell, jobs):
            rows.append(r)
            draw = "" if r["draw_half"] is None else f"± {r['draw_half']:.2f}"
            print(f"{r['pool']:<18}{r['hw']:<19}{r['best']:<16}{r['best_score']:>7.2f}{r['ours']:>7.2f}"
                  f"{r['diff']:>+10.2f}{'± ' + format(r['half'], '.2f'):>9}{draw:>10}"
                  f"{r['ours'] / r['best_score']:>10.3f}{r['oracle']:>8.2f}  {'yes' if r['binds'] else ''}", flush=True)
        binds = [r for r in rows if r["binds"]]

        def strictly(r: dict, key: str) -> bool:
            return r["diff"] - (r[key] if r[key] is not None else r["half"]) > 0

        print(f"cells {len(rows)}: ours >= best - 0.3 in {sum(r['diff'] >= -0.3 for r in rows)}, "
              f"mean ours-best {statistics.fmean(r['diff'] for r in rows):+.2f}; time binds in {len(binds)}: "
              f"ours strictly better in {sum(strictly(r, 'half') for r in binds)} (runs CI), "
              f"{sum(strictly(r, 'draw_half') for r in binds)} (draws CI)")
        checks = [("aimo2", "skythought_aime24", "l4x4-14b-awq"), ("aimo2", "syn-r1-8", "l4x4-14b-awq"),
                  ("aimo2", "syn-hard", "l4x4-7b-awq"), ("aimo3", "syn-aimo3", "h100-gpt-oss-120b")]
        print(f"\noverruns of the per-call or total limit in {args.overrun_runs} competitions, throughput 3x slower "
              "from half-time on:")
        for pool, hw, out in ex.map(overruns, [(*c, args.overrun_runs) for c in checks]):
            print(f"  {pool:<18}{hw:<19}" + "  ".join(f"{n} {v}" for n, v in out.items()), flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
