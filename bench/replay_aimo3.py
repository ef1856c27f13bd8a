"""The AIMO3 stack on logged gpt-oss output (issue 20): what ``stop_at_first_boxed`` saves, and how fast a
whole session replays.

    .venv/bin/python bench/replay_aimo3.py [--problems 50] [--attempts 8] [--tokens 3000]

* tokens decoded per attempt with the stop at the first box on vs off (the baseline: off, what the kit did
  before — the attempt ran to its final message), on two kinds of streams: a replayed Harmony token log in
  the real shapes (kit.sim.harmony_logs: two thirds of the attempts logged up to the box their harness
  stopped at) and scripted attempts that box their answer in the analysis at a third of their length and
  keep checking, as gpt-oss does when nothing stops it;
* answers lost without the new reading: attempts whose vote the old rule dropped (a box in the analysis
  channel, a final without a box), against the reading now;
* the whole ``kit dryrun --engine replay`` session on the log: real seconds against the virtual H100 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from openai_harmony import Message, Role

from kit.cli import main as kit_main
from kit.runtime.protocols.harmony import completion_ids, harmony_encoding
from kit.runtime.solver import Solver, sandbox_for
from kit.runtime.solver_config import AIMO3_SOLVER
from kit.sim.harmony_logs import LogShape, harmony_log, write_harmony_log
from kit.sim.scripted import Completion, ScriptedEngine
from kit.sim.token_replay import TokenReplayEngine


def tokens_per_attempt(engine_of, problems: list[tuple[str, str]], stop: bool) -> list[int]:
    cfg = replace(AIMO3_SOLVER, early_stop=False, stop_at_first_boxed=stop)
    sandbox = sandbox_for(cfg)
    out: list[int] = []
    try:
        engine = engine_of()
        for pid, text in problems:
            result = asyncio.run(Solver(engine, cfg, profile="aimo3", sandbox=sandbox).solve(pid, text))
            out += [s.tokens for s in result.samples]
    finally:
        sandbox.shutdown()
    return out


def scripted(tokens: int):
    enc = harmony_encoding()
    words = ["step", "by", "step", "we", "check", "the", "parity", "of", "each", "case"]

    def script(request) -> Completion:
        n = tokens // 3
        thought = " ".join(words[i % len(words)] + str(i) for i in range(n))
        checking = " ".join(words[i % len(words)] + str(i) for i in range(2 * n))
        analysis = Message.from_role_and_content(Role.ASSISTANT, f"{thought} so the answer is \\boxed{{42}}. Let me "
                                                 f"verify. {checking}").with_channel("analysis")
        final = Message.from_role_and_content(Role.ASSISTANT, "\\boxed{42}").with_channel("final")
        return Completion(tuple(completion_ids([analysis, final])))

    return lambda: ScriptedEngine(script, decode=enc.decode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--attempts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=3000, help="median attempt length of the generated log")
    args = ap.parse_args()
    rows = harmony_log(LogShape(problems=args.problems, attempts=args.attempts, median_tokens=args.tokens, seed=7))
    with tempfile.TemporaryDirectory() as tmp:
        log = write_harmony_log(Path(tmp) / "gpt-oss-run.jsonl", rows)
        problems = list(dict.fromkeys((r["problem_id"], r["problem"]) for r in rows))[:10]
        for label, engine_of in (("replayed log", lambda: TokenReplayEngine.from_log(log)),
                                 ("scripted: box at 1/3, then checking", scripted(args.tokens))):
            off = tokens_per_attempt(engine_of, problems, stop=False)
            on = tokens_per_attempt(engine_of, problems, stop=True)
            print(f"{label:<38} tokens/attempt: stop off {statistics.fmean(off):8.0f}   stop on "
                  f"{statistics.fmean(on):8.0f}   ratio {statistics.fmean(on) / statistics.fmean(off):.3f}")
        ends = {e: sum(r["end"] == e for r in rows) for e in ("analysis_box", "boxed_final", "bare_final", "cut")}
        read_before, read_now = ends["boxed_final"], len(rows) - ends["cut"]
        print(f"log of {len(rows)} attempts: {ends}; answers read: before {read_before} (only boxed finals: analysis "
              f"boxes ended as errors, bare finals as no answer), now {read_now} (all but the cut ones)")
        start = time.perf_counter()
        out = Path(tmp) / "dry"
        kit_main(["dryrun", "--stack", "gpt-oss", "--profile", "aimo3", "--engine", "replay", "--traces", str(log),
                  "--problems", str(log), "--out", str(out)])
        wall = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
        print(f"\nreplay dry-run: {summary['problems']} problems, {summary['correct']} correct, "
              f"{summary['seconds']:.0f} virtual H100 seconds in {wall:.1f} s real ({summary['seconds'] / wall:.0f}x)")


if __name__ == "__main__":
    main()
