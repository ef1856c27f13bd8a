"""Replay every executed ToRA GSM8K code block in the sandbox and compare with the recorded outputs.

What: all code blocks of both bundled ``tora_gsm8k`` trace files (ToRA-70B and ToRA-Code-34B, 1319
trajectories each), re-run in the sandbox under ToRA's 5 s limit, each classified against the output
ToRA's harness recorded (exact, float within 1e-9, match after ToRA's output shaping, both timed out;
or one of the mismatch categories). Prints a markdown table per replay mode and one example of every
category that is not a plain exact match.

Why: ``tests/test_sandbox_tora.py`` replays a subset on every test run; this script produces the
full-set figures in ``docs/sandbox_tora.md``, and answers empirically whether a fresh process per block
or one stateful session per trajectory reproduces the recorded outputs better (``--modes``; ``shared``
runs a whole file in one session, to see whether leaked state changes anything). The parser,
comparison and categories are :mod:`kit.offline.sandbox_replay`'s, shared with the test, so the test and
these figures cannot drift apart.

    .venv/bin/python bench/sandbox_tora.py [--modes fresh,trajectory,shared] [--workers 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from kit.offline import sandbox_replay
from kit.offline.traces import load_pool

ROOT = Path(__file__).resolve().parents[1]
MODES = ("fresh", "trajectory", "shared")


def short(source: str) -> str:
    return source.split("_gsm8k")[0]


def one_line(text: str, limit: int = 120) -> str:
    flat = text.strip().replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--workers", type=int, default=4, help="sandbox workers")
    ap.add_argument("--threads", type=int, default=8, help="trajectories replayed at once")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := sorted(set(modes) - set(MODES)):
        ap.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")

    samples = load_pool("tora_gsm8k")
    trajectories, unpaired = sandbox_replay.trajectory_blocks(samples)
    n_blocks = sum(len(t) for t in trajectories)
    per_trajectory = Counter(len(t) for t in trajectories)
    files = sorted({t[0].source for t in trajectories})
    print(f"traces: {len(samples)} trajectories in {len(files)} files; {n_blocks} executed code blocks "
          f"(blocks per trajectory: {dict(sorted(per_trajectory.items()))}); "
          f"{unpaired} code blocks never executed (no recorded output, skipped)")
    categories = [*sandbox_replay.REPRODUCED, *sandbox_replay.MISMATCHES]

    for mode in modes:
        start = time.perf_counter()
        with sandbox_replay.tora_sandbox(workers=args.workers) as sb:
            outcomes = sandbox_replay.replay(sb, trajectories, mode=mode, threads=args.threads)
        seconds = time.perf_counter() - start
        print(f"\n### mode `{mode}`: {len(outcomes)} blocks in {seconds:.1f} s (sandbox start-up included)\n")
        print("| category | " + " | ".join(short(f) for f in files) + " | all |")
        print("|---|" + "---:|" * (len(files) + 1))
        by_file = {f: Counter(o.category for o in outcomes if o.block.source == f) for f in files}
        total = Counter(o.category for o in outcomes)
        for cat in categories:
            kind = "" if cat in sandbox_replay.REPRODUCED else " (mismatch)"
            print(f"| {cat}{kind} | " + " | ".join(str(by_file[f][cat]) for f in files) + f" | {total[cat]} |")
        rates = []
        for f in [*files, None]:
            chosen = [o for o in outcomes if f is None or o.block.source == f]
            rates.append(f"{sum(o.reproduced for o in chosen)}/{len(chosen)} "
                         f"({100 * sum(o.reproduced for o in chosen) / max(len(chosen), 1):.2f}%)")
        print("| **reproduced** | " + " | ".join(rates) + " |")
        print("\nexamples (first block of each category other than exact):")
        for cat in categories[1:]:
            first = next((o for o in outcomes if o.category == cat), None)
            if first is None:
                continue
            b = first.block
            print(f"- {cat}: {short(b.source)} trajectory {b.trajectory} block {b.position}: "
                  f"recorded `{one_line(b.recorded)}`; ours {first.result.status.value} "
                  f"stdout `{one_line(first.result.stdout)}` stderr `{one_line(first.result.stderr, 200)}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
