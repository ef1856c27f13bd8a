"""Benchmark: the offline evaluation (``python -m kit evaluate``) on the full trace pools, by stage.

Why: issue 8 asks that evaluating a run from its recorded samples take "well under a minute" on the
full traces, so that budget and vote questions about a 5-hour run are answered in seconds. This times
the stages the command runs, wall (``perf_counter``) and CPU (``process_time`` plus the answer
normaliser's helper processes) separately, because the shared 2-core machine is often loaded and CPU
time is then the steadier figure:

* imports — ``kit.offline.evaluate`` and what it pulls in (polars, numpy, sympy via the answer normaliser);
* ``load_runs`` — read the pools, extract and normalise every answer, tokenise every sample once
  (approx tokenizer, character offsets of every token kept);
* ``evaluate`` — per-problem and overall metrics, exact maj@k, the budget curve, the strategy table;
* ``write_report`` + ``write_json`` — ``report.md`` with its three plots, and the JSON (``--out`` or a
  temporary folder);
* the whole: all of the above. Target: < 60 s wall (exit 1 otherwise).

Baseline (named in issue 8 for the budget curve): "cutting each sample at budget B with the tokenizer
and re-extracting", i.e. re-tokenising every sample at every budget (``ApproxTokenizer.pieces``, join
the first B pieces) and re-extracting its answer (``extract_answer`` + ``profile.to_answer``). Ours
tokenises once and cuts by the cached offsets. Both run side by side on the SkyThought pool over
:data:`kit.offline.budget.DEFAULT_BUDGETS`; both memoise the normalisation of an extracted string (sympy is
slow), so the ratio measures the cutting, not the memo. Their per-sample answers and per-budget pass@1
and maj@n must be equal (exit 1 otherwise); the ratio baseline/ours is printed with and without our
one-time tokenisation (``budget_curve`` on a run whose offset cache was emptied).

Pools: ``../shared/data/traces/skythought_32b_aime24`` and ``../shared/data/traces/nemoskills_fixture``
when ``../shared`` is here, else the bundled pools ``skythought_aime24`` and ``nemoskills`` (said so).

    .venv/bin/python bench/evaluate.py [--pool NAME|PATH ...] [--out DIR] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import time

_T0_WALL, _T0_CPU = time.perf_counter(), time.process_time()  # before the heavy imports, to time them

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

from kit.offline.budget import DEFAULT_BUDGETS, budget_curve  # noqa: E402
from kit.offline.evaluate import evaluate  # noqa: E402
from kit.offline.report import write_json, write_report  # noqa: E402
from kit.offline.runs import EvalProblem, EvalSample, Run, answer_of, load_runs  # noqa: E402
from kit.runtime.profiles import Profile  # noqa: E402
from kit.runtime.tokens import ApproxTokenizer  # noqa: E402
from kit.runtime.voting import Vote, majority  # noqa: E402

_IMPORT_WALL, _IMPORT_CPU = time.perf_counter() - _T0_WALL, time.process_time() - _T0_CPU

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "traces"
FULL = (SHARED / "skythought_32b_aime24", SHARED / "nemoskills_fixture")
BUNDLED = ("skythought_aime24", "nemoskills")
TARGET_WALL_S = 60.0
"""Issue 8: the whole evaluation "well under a minute" on the full traces."""
T = TypeVar("T")


@dataclass
class Timing:
    """One stage: wall seconds (what a user waits) and CPU seconds of this process and its helper
    processes (steadier under load; above wall where polars runs threads)."""

    wall: float
    cpu: float


def children_cpu() -> float:
    """CPU seconds of this process's children: the answer normaliser runs sympy/math-verify in
    long-lived helper processes (:mod:`kit.runtime.timeouts`), whose time ``process_time`` does not see. Live
    children from ``/proc`` (Linux), finished ones from ``getrusage``; 0 where ``/proc`` is missing."""
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = done.ru_utime + done.ru_stime
    me, tick = str(os.getpid()), os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[1] == me:  # ppid; utime and stime are fields 14 and 15 of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_now() -> float:
    return time.process_time() + children_cpu()


def timed(fn: Callable[[], T]) -> tuple[T, Timing]:
    wall, cpu = time.perf_counter(), cpu_now()
    out = fn()
    return out, Timing(time.perf_counter() - wall, cpu_now() - cpu)


def default_pools() -> tuple[list[str], str]:
    """The full shared pools when ``../shared`` is here, else the bundled ones (and a note saying so)."""
    if all(p.is_dir() for p in FULL):
        return [str(p) for p in FULL], f"full pools under {SHARED}"
    return list(BUNDLED), f"{SHARED} not found: bundled pools {', '.join(BUNDLED)} instead"


def describe(run: Run) -> dict[str, Any]:
    """Size of a run: what the timings are per."""
    samples = [s for p in run.problems for s in p.samples]
    return {"run": run.name, "source": run.source, "problems": len(run.problems), "scored": len(run.scored),
            "samples": len(samples), "approx_tokens": sum(s.tokens for s in samples),
            "max_chars": max((len(s.text) for s in samples), default=0)}


# --- the budget curve, baseline and ours -------------------------------------------------------------


def scored_pairs(run: Run) -> list[tuple[EvalProblem, EvalSample]]:
    """The samples the budget curve reads: finished samples of scored problems, in budget_curve's order."""
    return [(p, s) for p in run.scored for s in p.done]


def baseline_answers(pairs: Sequence[tuple[EvalProblem, EvalSample]], profile: Profile,
                     budgets: Sequence[int]) -> dict[int, list[int | None]]:
    """Issue 8's baseline: every sample re-tokenised at every budget, cut to its first B tokens, answer
    re-extracted. Normalisation of an extracted string is memoised, as ours does."""
    tok = ApproxTokenizer()
    cache: dict[str, int | None] = {}
    return {b: [answer_of("".join(tok.pieces(s.text)[:b]), profile, cache) for _, s in pairs]
            for b in sorted(set(budgets))}


def curve_from_answers(pairs: Sequence[tuple[EvalProblem, EvalSample]],
                       answers: Sequence[int | None]) -> tuple[float, float]:
    """(pass@1, maj@n) from one budget's answers, averaged over problems as budget_curve does."""
    by_problem: dict[str, list[int | None]] = {}
    golds: dict[str, int | None] = {}
    for (p, _), a in zip(pairs, answers, strict=True):
        by_problem.setdefault(p.problem_id, []).append(a)
        golds[p.problem_id] = p.gold
    pass1 = [sum(a == golds[pid] for a in ans) / len(ans) for pid, ans in by_problem.items()]
    votes = [majority([Vote(a) for a in ans]) == golds[pid] for pid, ans in by_problem.items()]
    return sum(pass1) / len(pass1), sum(votes) / len(votes)


def our_answers(run: Run, pairs: Sequence[tuple[EvalProblem, EvalSample]],
                budgets: Sequence[int]) -> dict[int, list[int | None]]:
    """Per-sample answers at each budget from the cached offsets (for the sample-by-sample check; the
    timed path is :func:`kit.offline.budget.budget_curve` itself)."""
    out: dict[int, list[int | None]] = {}
    cache: dict[str, int | None] = {}
    for b in sorted(set(budgets)):
        out[b] = []
        for p, s in pairs:
            e = run.ends[(p.problem_id, s.index)]
            text = s.text[: int(e[b - 1])] if len(e) > b else s.text
            out[b].append(answer_of(text, run.profile, cache))
    return out


def compare_curve(run: Run, budgets: Sequence[int], repeat: int) -> dict[str, Any]:
    """Ours (with and without the one tokenisation) vs the baseline on one run; equality checked."""
    pairs = scored_pairs(run)
    cached = dict(run.ends)
    fresh: list[Timing] = []
    for _ in range(repeat):  # budget_curve on an emptied offset cache: tokenise once + cut
        run.ends.clear()
        curve, t = timed(lambda: budget_curve(run, budgets))
        fresh.append(t)
    run.ends.update(cached)
    warm = [timed(lambda: budget_curve(run, budgets))[1] for _ in range(repeat)]
    base, t_base = timed(lambda: baseline_answers(pairs, run.profile, budgets))
    ours = our_answers(run, pairs, budgets)
    rows, mismatches = [], []
    for row in curve.iter_rows(named=True):
        b = row["budget"]
        pass1, maj = curve_from_answers(pairs, base[b])
        diff = sum(x != y for x, y in zip(ours[b], base[b], strict=True))
        if pass1 != row["pass@1"] or maj != row["maj@n"] or diff:
            mismatches.append(f"budget {b}: pass@1 {row['pass@1']} vs baseline {pass1}, maj@n {row['maj@n']} "
                              f"vs {maj}, {diff} sample answers differ")
        rows.append({"budget": b, "pass@1": row["pass@1"], "baseline_pass@1": pass1, "maj@n": row["maj@n"],
                     "baseline_maj@n": maj, "cut": row["cut"], "answers_differ": diff})

    def best(ts: list[Timing]) -> Timing:  # least disturbed by the other jobs on the machine
        return Timing(min(t.wall for t in ts), min(t.cpu for t in ts))

    with_tok, without = best(fresh), best(warm)
    return {"run": run.name, "samples": len(pairs), "budgets": sorted(set(budgets)), "repeat": repeat,
            "ours_with_tokenisation": asdict(with_tok), "ours_cached_offsets": asdict(without),
            "baseline": asdict(t_base),
            "ratio_cpu_incl_tokenisation": t_base.cpu / with_tok.cpu,
            "ratio_cpu_curve_only": t_base.cpu / without.cpu,
            "ratio_wall_incl_tokenisation": t_base.wall / with_tok.wall,
            "ratio_wall_curve_only": t_base.wall / without.wall,
            "rows": rows, "mismatches": mismatches}


def load_average() -> str:
    """The 1/5/15-minute load: other jobs on the shared machine stretch wall time, not CPU time."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", action="append", default=None, metavar="NAME|PATH",
                    help="trace pool to evaluate (repeatable; default: the full shared pools, else bundled)")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="best-of-N for our (short) budget-curve timings; the baseline runs once")
    ap.add_argument("--json", type=Path, default=None, help="write all figures as JSON here")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    pools, where = (args.pool, "pools from --pool") if args.pool else default_pools()
    print(f"pools: {where}")
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, load average {load_average()}, "
          f"python {platform.python_version()}")

    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        out = args.out or Path(tmp) / "report"
        runs, t_load = timed(lambda: load_runs((), pools))
        ev, t_eval = timed(lambda: evaluate(runs))

        def report() -> dict[str, Path]:
            files = write_report(ev, out)
            files["json"] = write_json(ev, out / "evaluation.json")
            return files

        files, t_report = timed(report)
    stages = {"imports (kit.offline.evaluate, polars, numpy, ...)": Timing(_IMPORT_WALL, _IMPORT_CPU),
              "load_runs: load pools, extract answers, tokenise once": t_load,
              "evaluate: metrics, exact maj@k, budget curve, strategy table": t_eval,
              "write_report + write_json: report.md, 3 plots, JSON": t_report}
    whole = Timing(sum(t.wall for t in stages.values()), sum(t.cpu for t in stages.values()))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    sizes = [describe(r) for r in runs]
    print()
    for s in sizes:
        print(f"  {s['run']}: {s['problems']} problems ({s['scored']} scored), {s['samples']} samples, "
              f"{s['approx_tokens'] / 1e6:.2f} M approx tokens, longest {s['max_chars']:,} chars")
    print(f"  evaluate: ks {ev.ks}, {len(ev.budgets)} budgets, strategy table {ev.strategies.height} rows "
          f"(1000 bootstrap draws); report: {', '.join(sorted(f.name for f in files.values()))}")
    print()
    print(f"{'stage':<64}{'wall s':>9}{'CPU s':>9}")
    for name, t in stages.items():
        print(f"{name:<64}{t.wall:>9.2f}{t.cpu:>9.2f}")
    print(f"{'whole (imports + load + evaluate + report)':<64}{whole.wall:>9.2f}{whole.cpu:>9.2f}")
    print(f"peak RSS {peak_mb:.0f} MB (this process; the helper processes not counted)")

    target = [r for r in runs if "skythought" in r.source.lower()] or runs[:1]
    cmp = compare_curve(target[0], DEFAULT_BUDGETS, args.repeat)
    print(f"\nbudget curve on {cmp['run']}: {cmp['samples']} samples x {len(cmp['budgets'])} budgets "
          f"({', '.join(f'{b // 1000}k' for b in cmp['budgets'])}); ours best of {cmp['repeat']}")
    print(f"{'budget':>8}{'pass@1':>9}{'baseline':>10}{'maj@n':>8}{'baseline':>10}{'cut':>7}")
    for r in cmp["rows"]:
        print(f"{r['budget']:>8}{r['pass@1']:>9.3f}{r['baseline_pass@1']:>10.3f}{r['maj@n']:>8.3f}"
              f"{r['baseline_maj@n']:>10.3f}{r['cut']:>7.2f}")
    print()
    print(f"{'budget curve':<58}{'wall s':>9}{'CPU s':>9}")
    for label, key in (("ours: tokenise once + cut by offsets", "ours_with_tokenisation"),
                       ("ours: cut by cached offsets (as in evaluate)", "ours_cached_offsets"),
                       ("baseline: re-tokenise every sample at every budget", "baseline")):
        print(f"{label:<58}{cmp[key]['wall']:>9.2f}{cmp[key]['cpu']:>9.2f}")
    print(f"ratio baseline / ours (CPU): {cmp['ratio_cpu_incl_tokenisation']:.1f}x including our tokenisation, "
          f"{cmp['ratio_cpu_curve_only']:.1f}x for the curve alone "
          f"(wall: {cmp['ratio_wall_incl_tokenisation']:.1f}x, {cmp['ratio_wall_curve_only']:.1f}x)")
    same = not cmp["mismatches"]
    print("same curve as the baseline: " + ("yes (every sample's answer, pass@1 and maj@n at every budget)"
                                             if same else "NO\n  " + "\n  ".join(cmp["mismatches"])))
    met = whole.wall <= TARGET_WALL_S
    print(f"target: whole evaluation < {TARGET_WALL_S:.0f} s wall: {'met' if met else 'MISSED'} "
          f"({whole.wall:.1f} s, {TARGET_WALL_S / whole.wall:.1f}x margin)")

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "pools": pools, "where": where, "sizes": sizes, "load_average": load_average(),
            "stages": {k: asdict(v) for k, v in stages.items()}, "whole": asdict(whole),
            "peak_rss_mb": peak_mb, "target_wall_s": TARGET_WALL_S, "target_met": met,
            "budget_curve": cmp}, indent=2))
        print(f"json: {args.json}")
    return 0 if met and same else 1


if __name__ == "__main__":
    sys.exit(main())
