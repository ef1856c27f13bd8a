"""Benchmark: what the Harmony protocol and the confidence bookkeeping cost the kit, against a decode step.

What, side by side in one run:

* per tool-call turn of a gpt-oss attempt, the kit's own work between two generation requests — parse the
  turn's completion tokens into messages (``HarmonyConversation.end_turn``), run the call in the attempt's
  warm sandbox session, render the tool message back (``add_output``) and build the next request (the whole
  conversation's token ids) — at a short and a long context;
* the first prompt's rendering (system + user, once per problem: its attempts share it);
* per generated token, the confidence bookkeeping: vLLM's top-k log-probabilities turned into ours
  (``top_logprobs``) and the token entropy accumulated (``Confidence.add``).

Baseline: one decode step of gpt-oss-120b on an H100 at the memory roofline (docs/design.md "AIMO3"; the
kit's ``h100-gpt-oss-120b`` speed model): a step reads the bf16 attention and LM head (~4 GB) and the
experts routed to (4 of 128 per layer, 13 MB each in MXFP4: ~1.9 GB for one sequence), ≈ 5.9 GB at
3.35 TB/s = 1.8 ms; with the 8 attempts decoding together at 20k tokens of context each, the speed model's
10.6 ms per step, i.e. 1.3 ms per generated token. The ratios say how much of a decode step (per turn) and of a token's time (per token)
the kit adds. The tool call's own code time is the sandbox's (bench/sandbox.py); a trivial cell is used.

    .venv/bin/python bench/harmony.py [--turns 200] [--tokens 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time

from openai_harmony import Message, Role

from kit.runtime.confidence import Confidence
from kit.runtime.engines.vllm_engine import top_logprobs
from kit.runtime.prompts import HARMONY_TIR
from kit.runtime.protocols.harmony import HarmonyProtocol, _first_prompt, completion_ids
from kit.runtime.sandbox import Sandbox
from kit.runtime.sandbox.pool import HARMONY_PRELUDE, SandboxConfig
from kit.runtime.throughput import SpeedModel

ROOFLINE_STEP_S = 5.9e9 / 3.35e12
"""One sequence's decode step of gpt-oss-120b at H100 memory bandwidth (see the module docstring)."""
ANALYSIS = ("Let me set up the recurrence carefully. " * 40).strip()
CODE = "from sympy import *\nn = symbols('n')\nprint(sum(k**2 for k in range(1, 101)))"
PROBLEM = "Find the sum of the squares of the first 100 positive integers, modulo 10^5."


def _completion() -> list[int]:
    analysis = Message.from_role_and_content(Role.ASSISTANT, ANALYSIS).with_channel("analysis")
    call = Message.from_role_and_content(Role.ASSISTANT, CODE).with_channel("analysis").with_recipient(
        "python").with_content_type("code")
    return completion_ids([analysis, call])  # ~300 tokens: a paragraph of analysis and a python call


async def per_turn(turns: int, context: int) -> dict[str, float]:
    """Median milliseconds of each part of a tool-call turn with ``context`` tokens already in the attempt."""
    protocol = HarmonyProtocol()
    completion = _completion()
    sandbox = Sandbox(config=SandboxConfig(prelude=HARMONY_PRELUDE, show_last_expression=True), workers=1,
                      timeout=6.0).start()

    async def off_loop(fn, *args):
        return fn(*args)

    parse, tool, render, request = [], [], [], []
    try:
        for t in range(turns):
            conv = await protocol.open(HARMONY_TIR, PROBLEM, "", None, off_loop)
            conv.ids += [200007] * max(context - len(conv.ids), 0)  # padding to the context size (never parsed)
            t0 = time.perf_counter()
            end = conv.end_turn("", completion, len(completion), "stop", None, True)
            t1 = time.perf_counter()
            result = await sandbox.arun(end.code, session=f"bench:{t % 4}", timeout=6.0)
            t2 = time.perf_counter()
            await conv.add_output(result, off_loop)
            t3 = time.perf_counter()
            conv.request(True)
            t4 = time.perf_counter()
            assert end.kind == "call" and result.stdout.strip() == "338350", (end, result)
            parse.append(t1 - t0)
            tool.append(t2 - t1)
            render.append(t3 - t2)
            request.append(t4 - t3)
    finally:
        sandbox.shutdown()
    ms = {k: statistics.median(v) * 1e3 for k, v in
          (("parse", parse), ("tool", tool), ("render", render), ("request", request))}
    ms["turn"] = sum(ms.values())
    return ms


def prompt_render(n: int) -> tuple[float, float]:
    """(ms of a render, ms of a cached one): a problem's first attempt renders, its other attempts reuse it."""
    protocol = HarmonyProtocol()
    fresh, cached = [], []
    for _ in range(n):
        _first_prompt.cache_clear()
        t0 = time.perf_counter()
        protocol.render_prompt(PROBLEM)
        t1 = time.perf_counter()
        protocol.render_prompt(PROBLEM)
        fresh.append(t1 - t0)
        cached.append(time.perf_counter() - t1)
    return statistics.median(fresh) * 1e3, statistics.median(cached) * 1e3


class _Lp:
    __slots__ = ("decoded_token", "logprob", "rank")

    def __init__(self, logprob: float, rank: int) -> None:
        self.logprob, self.rank, self.decoded_token = logprob, rank, None


def per_token(tokens: int, k: int = 5) -> float:
    """Microseconds per generated token for vLLM-shaped logprobs (k alternatives + the sampled token when it
    is outside them) → :func:`top_logprobs` → :meth:`Confidence.add`, in chunks of 16 tokens."""
    positions = []
    for i in range(16):
        entry = {j: _Lp(-0.1 * (j + 1) - 0.01 * i, j + 1) for j in range(k)}
        entry[100_000 + i] = _Lp(-7.0, 40)  # the sampled token, ranked 40th (vLLM adds it)
        positions.append(entry)
    conf = Confidence()
    t0 = time.perf_counter()
    for _ in range(tokens // 16):
        conf.add(top_logprobs(positions, k))
    elapsed = time.perf_counter() - t0
    assert len(conf.entropies) == tokens // 16 * 16 and all(math.isfinite(h) for h in conf.entropies[:16])
    return elapsed / (tokens // 16 * 16) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=200_000)
    args = ap.parse_args()
    speed = SpeedModel.h100_gpt_oss_120b()
    step8 = speed.step_seconds(8, 8 * 20_000)
    token8 = step8 / 8
    print(f"baseline: gpt-oss-120b decode step on H100 at roofline {ROOFLINE_STEP_S * 1e3:.2f} ms (1 sequence); "
          f"speed model, 8 attempts at 20k context: {step8 * 1e3:.2f} ms/step = {token8 * 1e3:.2f} ms per token")
    fresh, cached = prompt_render(args.turns)
    print(f"first prompt render (system + user): {fresh:.3f} ms once per problem, {cached:.3f} ms for its other "
          "attempts (cached)")
    for context in (2_000, 30_000):
        ms = asyncio.run(per_turn(args.turns, context))
        print(f"tool-call turn at {context:,} tokens of context: parse {ms['parse']:.3f} ms, sandbox round trip "
              f"{ms['tool']:.3f} ms, tool message render {ms['render']:.3f} ms, next request {ms['request']:.3f} ms"
              f" = {ms['turn']:.3f} ms per turn = {ms['turn'] / (ROOFLINE_STEP_S * 1e3):.2f}x a roofline decode "
              f"step, {ms['turn'] / (step8 * 1e3):.2f}x an 8-attempt step")
    us = per_token(args.tokens)
    print(f"confidence bookkeeping: {us:.2f} us per token (top-5 + sampled) = {us / (token8 * 1e6):.4f} of a "
          f"token's decode time with 8 attempts ({us / (ROOFLINE_STEP_S * 1e6):.4f} of a roofline step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
