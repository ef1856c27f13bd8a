"""The replay engine plays real recorded model text exactly, as vLLM would stream it, in virtual time.

Recordings: the bundled SkyThought AIME24 pool (30 problems × 11 long-CoT samples) and ToRA GSM8K
tool-integrated trajectories (```` ```python ```` block, recorded ```` ```output ```` block, answer).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import re
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest

from kit.offline.traces import RecordedSample, load_pool
from kit.runtime.engines.base import Chunk, Engine, GenParams, RealClock
from kit.runtime.protocols.tir import extract_code
from kit.runtime.records import RunRecorder
from kit.runtime.throughput import SpeedModel
from kit.sim.replay import ReplayConfig, ReplayEngine, VirtualClock

SHORT_PROBLEM = "9"
"""SkyThought AIME24 problem whose 11 samples are the shortest (≤ 7.8k chars): fast tests."""
LONG_PROBLEM = "21"
"""Its longest samples (up to 160k chars): still running at virtual 1800 s."""


@pytest.fixture(scope="module")
def sky() -> list[RecordedSample]:
    return load_pool("skythought_aime24")


@pytest.fixture(scope="module")
def tora() -> list[RecordedSample]:
    return load_pool("tora_gsm8k")


def by_problem(samples: list[RecordedSample]) -> dict[str, list[RecordedSample]]:
    groups: dict[str, list[RecordedSample]] = defaultdict(list)
    for s in samples:
        groups[s.problem_id].append(s)
    return groups


@dataclass
class Result:
    final: Chunk
    joined: str
    """All deltas concatenated."""
    finished_at: float
    chunks: int


async def run_request(engine: ReplayEngine, prompt: str, params: GenParams, request_id: str,
                      finished: list[str] | None = None) -> Result:
    deltas: list[str] = []
    final = None
    async for chunk in engine.generate(prompt, params, request_id):
        deltas.append(chunk.delta)
        final = chunk
    assert final is not None and final.finished
    if finished is not None:
        finished.append(request_id)
    return Result(final, "".join(deltas), engine.clock.now(), len(deltas))


async def run_samples(engine: ReplayEngine, problem: str, n: int, finished: list[str] | None = None,
                      **params: object) -> list[Result]:
    """n concurrent samples of one problem, seeds 0..n-1, as a solver would start them."""
    prompt = engine.chat_prompt([{"role": "user", "content": problem}])
    kwargs = {"max_tokens": 200_000, **params}
    return await asyncio.gather(*(run_request(engine, prompt, GenParams(seed=i, **kwargs), f"s{i}", finished)
                                  for i in range(n)))


def token_ends(engine: ReplayEngine, text: str) -> list[int]:
    return list(itertools.accumulate(map(len, engine.config.tokenizer.pieces(text))))


def test_engine_protocol_and_chat_prompt() -> None:
    engine = ReplayEngine.from_pool("skythought_aime24")
    assert isinstance(engine, Engine)
    assert isinstance(engine.clock, VirtualClock)
    prompt = engine.chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}])
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n"
                      "<|im_start|>assistant\n<think>\n")
    assert len(engine.problems) == 30
    assert engine.max_model_len == ReplayConfig().max_model_len


def test_samples_replay_exactly_and_finish_in_length_order(sky: list[RecordedSample]) -> None:
    samples = by_problem(sky)[SHORT_PROBLEM]
    engine = ReplayEngine.from_samples(sky)
    finished: list[str] = []
    results = asyncio.run(run_samples(engine, samples[0].problem, len(samples), finished))
    for s, r in zip(samples, results, strict=True):
        assert r.joined == s.text
        assert r.final.text == s.text
        assert (r.final.finish_reason, r.final.stop_reason) == ("stop", None)  # EOS
        assert r.final.tokens == engine.count_tokens(s.text) + 1  # + the EOS token
        assert r.chunks > 1
    # Same start, same speed: the shorter (in tokens) finishes first, ties in request order.
    expected = sorted(range(len(samples)), key=lambda i: (results[i].final.tokens, i))
    assert finished == [f"s{i}" for i in expected]
    times = [results[i].finished_at for i in expected]
    assert times == sorted(times) and times[0] < times[-1]
    assert engine.stats.total_tokens == sum(r.final.tokens for r in results)
    # all 11 share the prompt: prefilled once (prefix cache)
    assert engine.stats.prefill_tokens == engine.count_tokens(engine.chat_prompt(
        [{"role": "user", "content": samples[0].problem}]))


def test_replay_is_deterministic_and_chunking_does_not_change_virtual_time(sky: list[RecordedSample]) -> None:
    samples = by_problem(sky)[SHORT_PROBLEM]

    def run(chunk_tokens: int) -> list[tuple[str, int, float]]:
        engine = ReplayEngine.from_samples(sky, ReplayConfig(chunk_tokens=chunk_tokens))
        finished: list[str] = []
        results = asyncio.run(run_samples(engine, samples[0].problem, len(samples), finished))
        by_id = {r.final.request_id: r for r in results}
        return [(rid, by_id[rid].final.tokens, by_id[rid].finished_at) for rid in finished]

    first, again, coarse = run(16), run(16), run(64)
    assert first == again
    assert [r[:2] for r in coarse] == [r[:2] for r in first]
    for (_, _, t1), (_, _, t2) in zip(first, coarse, strict=True):
        assert t2 == pytest.approx(t1, rel=1e-9)
    # the longest sample decoded its tokens at 1 to 11 sequences per step
    speed, longest = ReplayConfig().speed, first[-1][1]
    assert longest * speed.step_seconds(1) < first[-1][2] < longest * speed.step_seconds(11, 11 * 3000) + 1


@pytest.mark.parametrize("include", [True, False])
def test_stop_string_like_vllm(sky: list[RecordedSample], include: bool) -> None:
    sample = by_problem(sky)[SHORT_PROBLEM][0]
    stop = "<|end_of_thought|>"
    at = sample.text.index(stop)
    engine = ReplayEngine.from_samples(sky)
    prompt = engine.chat_prompt([{"role": "user", "content": sample.problem}])
    # a later stop string listed first does not win over the earlier match
    params = GenParams(max_tokens=100_000, seed=0, stop=("<|end_of_solution|>", stop),
                       include_stop_str_in_output=include)
    r = asyncio.run(run_request(engine, prompt, params, "a"))
    assert (r.final.finish_reason, r.final.stop_reason) == ("stop", stop)
    assert r.final.text == r.joined == sample.text[: at + len(stop) if include else at]
    # tokens up to and including the one that completes the stop string
    ends = token_ends(engine, sample.text)
    assert r.final.tokens == bisect.bisect_left(ends, at + len(stop)) + 1


@pytest.mark.parametrize("include", [True, False])
def test_stop_string_independent_of_chunking(tora: list[RecordedSample], include: bool) -> None:
    """Also when the stop string spans chunks: with the stop string left out, text that may begin one is
    held back (as vLLM does), so streamed text never has to be taken back."""
    sample = tora[0]
    stop = "eggs_sold"
    seen, times = set(), []
    for chunk_tokens in (1, 3, 64):
        engine = ReplayEngine.from_samples(tora, ReplayConfig(chunk_tokens=chunk_tokens))
        prompt = engine.chat_prompt([{"role": "user", "content": sample.problem}])
        params = GenParams(max_tokens=1000, seed=0, stop=(stop,), include_stop_str_in_output=include)
        r = asyncio.run(run_request(engine, prompt, params, "a"))
        assert r.joined == r.final.text
        seen.add((r.final.text, r.final.tokens, r.final.stop_reason))
        times.append(r.finished_at)
    assert len(seen) == 1
    assert times == pytest.approx([times[0]] * 3, rel=1e-9)
    text, *_ = seen.pop()
    at = sample.text.index(stop)
    assert text == sample.text[: at + len(stop) if include else at]


def test_max_tokens_gives_length(sky: list[RecordedSample]) -> None:
    sample = by_problem(sky)[SHORT_PROBLEM][3]
    engine = ReplayEngine.from_samples(sky, ReplayConfig(chunk_tokens=7))
    prompt = engine.chat_prompt([{"role": "user", "content": sample.problem}])
    r = asyncio.run(run_request(engine, prompt, GenParams(max_tokens=100, seed=3), "a"))
    assert (r.final.finish_reason, r.final.stop_reason, r.final.tokens) == ("length", None, 100)
    assert r.final.text == "".join(engine.config.tokenizer.pieces(sample.text)[:100])


def test_max_model_len(tora: list[RecordedSample]) -> None:
    sample = tora[0]
    engine = ReplayEngine.from_samples(tora, ReplayConfig(max_model_len=200))
    prompt = engine.chat_prompt([{"role": "user", "content": sample.problem}])
    room = 200 - engine.count_tokens(prompt)
    r = asyncio.run(run_request(engine, prompt, GenParams(max_tokens=10_000, seed=0), "a"))
    assert (r.final.finish_reason, r.final.tokens) == ("length", room)
    with pytest.raises(ValueError, match="max_model_len"):
        asyncio.run(run_request(engine, prompt * 5, GenParams(max_tokens=10, seed=0), "b"))


def test_abort_stops_token_consumption(sky: list[RecordedSample]) -> None:
    samples = by_problem(sky)[LONG_PROBLEM]
    engine = ReplayEngine.from_samples(sky)
    clock = engine.clock
    tokens = engine.stats.tokens_by_request
    seen: dict[str, object] = {}

    async def controller() -> None:
        await clock.sleep(60)
        seen["aborted"] = aborted = engine.active_requests[::2]
        seen["at_abort"] = dict(tokens)
        await engine.abort([*aborted, "unknown-id"])
        await clock.sleep(60)  # virtual time passes; the others keep decoding
        seen["later"] = dict(tokens)
        seen["running"] = engine.active_requests
        await engine.abort(engine.active_requests)

    async def main() -> list[Result]:
        results, _ = await asyncio.gather(run_samples(engine, samples[0].problem, 11), controller())
        return results

    results = asyncio.run(main())
    aborted, at_abort, later, running = seen["aborted"], seen["at_abort"], seen["later"], seen["running"]
    assert len(aborted) >= 3 and len(running) >= 3  # type: ignore[arg-type]
    for r in results:
        rid = r.final.request_id
        assert r.final.text == r.joined == samples[int(rid[1:])].text[: len(r.final.text)]
        if rid in aborted:  # type: ignore[operator]
            assert r.final.finish_reason == "abort" and r.finished_at == 60
            assert later[rid] == at_abort[rid] == r.final.tokens  # type: ignore[index]
        elif rid in running:  # type: ignore[operator]
            assert r.final.finish_reason == "abort" and r.finished_at == 120
            assert later[rid] > at_abort[rid]  # type: ignore[index]
        else:
            assert r.final.finish_reason == "stop"
    assert engine.stats.total_tokens == sum(tokens.values())
    assert engine.active_requests == []


def test_consumer_that_stops_listening_aborts(tora: list[RecordedSample]) -> None:
    engine = ReplayEngine.from_samples(tora, ReplayConfig(chunk_tokens=4))
    prompt = engine.chat_prompt([{"role": "user", "content": tora[0].problem}])

    async def main() -> None:
        gen = engine.generate(prompt, GenParams(max_tokens=1000, seed=0), "x")
        async for _ in gen:
            break
        await gen.aclose()

    asyncio.run(main())
    assert engine.active_requests == []
    assert engine.stats.tokens_by_request["x"] == 4
    assert engine.stats.finish_reasons == {"abort": 1}


def test_watchdog_fires_at_exact_virtual_time(sky: list[RecordedSample]) -> None:
    samples = by_problem(sky)[LONG_PROBLEM]
    engine = ReplayEngine.from_samples(sky, ReplayConfig(chunk_tokens=64, speed=SpeedModel(step_s=0.1)))
    fired: list[tuple[float, list[str]]] = []

    async def watchdog() -> None:
        await engine.clock.sleep(1800)
        fired.append((engine.clock.now(), engine.active_requests))
        await engine.abort(engine.active_requests)

    async def main() -> list[Result]:
        results, _ = await asyncio.gather(run_samples(engine, samples[0].problem, 11), watchdog())
        return results

    results = asyncio.run(main())
    (when, running), = fired
    assert when == 1800.0
    assert running  # requests were decoding when it fired
    for r in results:
        if r.final.request_id in running:
            assert (r.final.finish_reason, r.finished_at) == ("abort", 1800.0)
        else:
            assert r.final.finish_reason == "stop" and r.finished_at < 1800
    assert engine.clock.now() == 1800.0


def test_virtual_clock_jumps_when_idle_but_not_while_held() -> None:
    clock = VirtualClock()
    events: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        events.append((name, clock.now()))

    async def holder() -> None:
        with clock.hold():
            await asyncio.sleep(0.05)  # real work (sandbox code) takes real time, no virtual time
            events.append(("released", clock.now()))

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(sleeper("late", 100), sleeper("early", 30), holder())
        return time.perf_counter() - t0

    real = asyncio.run(main())
    assert events == [("released", 0.0), ("early", 30.0), ("late", 100.0)]
    assert real < 1.0


def test_engine_does_not_step_while_clock_held(tora: list[RecordedSample]) -> None:
    engine = ReplayEngine.from_samples(tora, ReplayConfig(chunk_tokens=1))
    clock: VirtualClock = engine.clock  # type: ignore[assignment]

    async def main() -> tuple[int, int, float, float]:
        async def sandbox_like() -> tuple[int, int, float, float]:
            await clock.sleep(0.5)
            with clock.hold():
                before, t_before = engine.stats.total_tokens, clock.now()
                await asyncio.sleep(0.05)
                return before, engine.stats.total_tokens, t_before, clock.now()

        _, held = await asyncio.gather(run_samples(engine, tora[0].problem, 2), sandbox_like())
        return held

    before, after, t_before, t_after = asyncio.run(main())
    assert before == after > 0
    assert t_before == t_after == 0.5


@pytest.mark.slow
def test_whole_pool_replays_in_seconds(sky: list[RecordedSample]) -> None:
    """30 problems one after another (as the gateway sends them), 11 samples each, on the 4×L4 model."""
    groups = by_problem(sky)
    engine = ReplayEngine.from_samples(sky, ReplayConfig(chunk_tokens=64))

    async def main() -> int:
        exact = 0
        for samples in groups.values():
            results = await run_samples(engine, samples[0].problem, len(samples))
            exact += sum(r.joined == s.text for r, s in zip(results, samples, strict=True))
        return exact

    t0 = time.perf_counter()
    exact = asyncio.run(main())
    real = time.perf_counter() - t0
    virtual = engine.clock.now()
    print(f"\nwhole pool: {engine.stats.total_tokens} tokens, virtual {virtual / 3600:.2f} h, "
          f"real {real:.2f} s, {virtual / real:.0f}× faster")
    assert exact == 330
    assert virtual > 3600
    assert real < 20


# -- tool-integrated reasoning: continue a recorded trajectory after our own code output -----------------


async def tir_loop(engine: ReplayEngine, problem: str, output: str, *, stop: tuple[str, ...],
                   include: bool, before_output: str = "") -> tuple[list[Chunk], str]:
    """A minimal solver TIR loop: generate; if a code block is complete, append an output block; repeat."""
    prompt = engine.chat_prompt([{"role": "user", "content": problem}])
    context, turns = prompt, []
    for turn in range(8):
        params = GenParams(max_tokens=4096, seed=0, stop=stop, include_stop_str_in_output=include)
        final = None
        async for chunk in engine.generate(context, params, f"turn{turn}"):
            final = chunk
        assert final is not None
        turns.append(final)
        context += final.text
        if final.stop_reason is None:
            break
        if not include and final.stop_reason == "```":
            context += "```"  # the solver puts back the fence it asked to leave out
        if extract_code(context[len(prompt):]) is not None:
            context += f"{before_output}```output\n{output}\n```\n"
    return turns, context[len(prompt):]


@pytest.mark.parametrize(
    ("stop", "include", "before_output"),
    [
        (("```",), True, "\n"),  # stop at the closing fence, output on its own line
        (("```",), True, ""),  # ... glued to the fence
        (("```",), False, "\n"),  # fence left out of the text, put back by the solver
        (("```output",), False, ""),  # Qwen-harness style: stop where the model starts its own output
    ],
)
@pytest.mark.parametrize("output", ["999", "18"])
def test_tir_continuation_on_a_tora_trajectory(tora: list[RecordedSample], stop: tuple[str, ...],
                                               include: bool, before_output: str, output: str) -> None:
    sample = tora[0]  # Janet's ducks; ```python ... ``` then ```output\n18\n``` then the boxed answer
    recorded_output = "```output\n18\n```\n"
    code_part, answer_part = sample.text.split(recorded_output)
    engine = ReplayEngine.from_samples(tora)
    turns, generated = asyncio.run(tir_loop(engine, sample.problem, output, stop=stop, include=include,
                                            before_output=before_output))
    last = turns[-1]
    assert (last.finish_reason, last.stop_reason) == ("stop", None)
    assert last.text == answer_part  # resumed right after the recorded output block
    assert generated.startswith(code_part.rstrip("\n"))
    assert generated.endswith(f"```output\n{output}\n```\n" + answer_part)
    assert engine.stats.unaligned == 0
    assert engine.stats.continuations == len(turns) - 1


def test_tir_solver_style_cut_at_code_end_with_a_new_seed_each_turn(tora: list[RecordedSample]) -> None:
    """No stop strings: the solver watches the stream, aborts once a code block is closed, keeps the text
    up to the fence (the chunk went past it, into the recorded output) and asks again with another
    seed. The prompt's text decides which sample continues, and from where."""
    engine = ReplayEngine.from_samples(tora, ReplayConfig(chunk_tokens=64))
    closed_block = re.compile(r"```python\n.*?```", re.DOTALL)

    async def solve(problem: str, seed: int) -> tuple[str, str]:
        prompt = engine.chat_prompt([{"role": "user", "content": problem}])
        text, overshoot = "", ""
        for turn in range(3):
            params = GenParams(max_tokens=4096, seed=seed + turn)
            new = ""
            async for chunk in engine.generate(prompt + text, params, f"{seed}-{turn}"):
                new = chunk.text
                if turn == 0 and (m := closed_block.search(new)):
                    await engine.abort([f"{seed}-{turn}"])
                    new, overshoot = new[: m.end()], new[m.end() :]
                    break
            text += new
            if turn == 0:
                text += "\n```output\nOURS\n```\n"
            else:
                return text, overshoot
        raise AssertionError("no answer turn")

    async def main() -> list[tuple[str, str]]:
        return [await solve(tora[k].problem, seed) for k in (0, 1, 2, 1319, 1320) for seed in (0, 1)]

    results = asyncio.run(main())
    checked = 0
    for (text, overshoot), (k, seed) in zip(results, itertools.product((0, 1, 2, 1319, 1320), (0, 1)),
                                            strict=True):
        recorded = tora[(k % 1319) + 1319 * seed].text  # seed 0 → ToRA-70B, seed 1 → ToRA-Code-34B
        m = re.search(r"```output\n.*?```\n", recorded, re.DOTALL)
        assert m is not None
        assert overshoot.startswith("\n```output")  # the chunk ran past the code block
        assert text == recorded[: m.start()].rstrip("\n") + "\n```output\nOURS\n```\n" + recorded[m.end() :]
        checked += 1
    assert checked == 10
    assert engine.stats.unaligned == 0


def test_prefilled_assistant_text(sky: list[RecordedSample]) -> None:
    """Text the solver puts after the generation prompt: continued if the recording has it, else the
    sample replays from its start."""
    sample = by_problem(sky)[SHORT_PROBLEM][2]
    engine = ReplayEngine.from_samples(sky)
    prompt = engine.chat_prompt([{"role": "user", "content": sample.problem}])
    prefill = "<|begin_of_thought|>\n\n"
    assert sample.text.startswith(prefill)

    async def main() -> tuple[Result, Result]:
        fresh = await run_request(engine, prompt, GenParams(max_tokens=50, seed=0), "fresh")
        same = await run_request(engine, prompt + prefill, GenParams(max_tokens=100_000, seed=2), "a")
        other = await run_request(engine, prompt + "Sure! ", GenParams(max_tokens=100_000, seed=2), "b")
        assert fresh.final.finish_reason == "length"
        return same, other

    same, other = asyncio.run(main())
    assert same.final.text == sample.text[len(prefill) :]
    assert other.final.text == sample.text


def test_tir_multi_turn_and_unaligned_appends() -> None:
    problem = "Compute 2+3 and then square it."
    recording = ("Let me compute.\n```python\nprint(2+3)\n```\n```output\n5\n```\nNow square:\n"
                 "```python\nprint(5**2)\n```\n```output\n25\n```\nSo the answer is \\boxed{25}.")
    cot = "No code here. The answer is \\boxed{25}."
    engine = ReplayEngine({problem: [recording, cot]}, ReplayConfig(chunk_tokens=2))

    async def main() -> tuple[list[Chunk], str, list[Chunk], str]:
        turns, generated = await tir_loop(engine, problem, "OURS", stop=("```",), include=True,
                                          before_output="\n")
        # a CoT sample never wrote code: an appended output has nothing to replace and is ignored
        prompt = engine.chat_prompt([{"role": "user", "content": problem}])
        params = GenParams(max_tokens=100, seed=1, stop=("here.",))
        first = [c async for c in engine.generate(prompt, params, "cot")][-1]
        ctx = prompt + first.text + "\n```output\nSURPRISE\n```\n"
        rest = [c async for c in engine.generate(ctx, GenParams(max_tokens=100, seed=1), "cot2")][-1]
        return turns, generated, [first, rest], ctx

    turns, generated, cot_turns, _ = asyncio.run(main())
    assert generated == recording.replace("\n5\n", "\nOURS\n").replace("\n25\n```", "\nOURS\n```")
    assert turns[-1].text == "So the answer is \\boxed{25}."
    assert cot_turns[0].text + cot_turns[1].text == cot
    assert engine.stats.unaligned == 1


REC = "Plan.\n```python\nprint(6*7)\n```\n```output\n42\n```\nSo \\boxed{42}.\n```python\nprint(1)\n```\n```output\n1\n```\nDone."
"""A recording with two code turns, for the alignment table below."""


@pytest.mark.parametrize(
    ("generated", "resume_at", "unaligned"),
    [
        ("", "Plan.", False),
        ("Plan.\n```python\nprint(6*7)\n```", "\n```output\n42", False),  # stopped at the fence
        ("Plan.\n```python\nprint(6*7)\n```\n```output\n7\n```\n", "So ", False),  # own output
        ("Plan.\n```python\nprint(6*7)\n```\n```output\n42\n```\n", "So ", False),  # same output
        ("Plan.\n```python\nprint(6*7)\n```output\n7\n```", "\nSo ", False),  # glued, no newline
        ("Plan.\n```python\nprint(6*7)\n", "```\n```output", False),  # fence left out
        ("Plan.\n```python\nprint(6*7)\n```\n```output\nTraceback: boom\n```\n", "So ", False),
        ("Plan.\n```python\nprint(6*7)\n```\nTimed out.\n", "So ", False),  # another format: replaced
        ("Plan.\n```python\nprint(6*7)\n```\n```output\n7\n```\nSo \\boxed{42}.\n```python\nprint(1)\n```"
         "\n```output\nOURS\n```\n", "Done.", False),  # second turn
        ("Plan.\n```python\nprint(6*7)\n```\n```output\n7\n```\n\nSo \\boxed{42}.", "\n```python\nprint(1)",
         False),  # an extra newline from the solver is not a disagreement
        ("Plan.\nHint: use code.\n", "```python\nprint(6*7)", True),  # a nudge the model never saw
        ("Plan.\nHint: use code.\n```python\nprint(6*7)\n```", "\n```output", True),  # ... then more turns
    ],
)
def test_alignment_of_continuation_prompts(generated: str, resume_at: str, unaligned: bool) -> None:
    from kit.sim.alignment import align

    cfg = ReplayConfig()
    a = align(REC, generated, cfg.output_start, cfg.output_end, re.compile(cfg.output_gap))
    assert REC[a.resume :].startswith(resume_at)
    assert a.unaligned == unaligned


def test_common_prefix_matches_a_plain_scan() -> None:
    import random

    from kit.sim.alignment import common_prefix

    rng = random.Random(0)
    for _ in range(300):
        base = "".join(rng.choice("ab") for _ in range(rng.randint(0, 400)))
        a = base + "".join(rng.choice("ab") for _ in range(rng.randint(0, 50)))
        b = base + "".join(rng.choice("ab") for _ in range(rng.randint(0, 50)))
        i, j = rng.randint(0, len(a)), rng.randint(0, len(b))
        plain = 0
        while i + plain < len(a) and j + plain < len(b) and a[i + plain] == b[j + plain]:
            plain += 1
        assert common_prefix(a, i, b, j) == plain


def test_seedless_requests_take_samples_in_turn(tora: list[RecordedSample]) -> None:
    engine = ReplayEngine.from_samples(tora)
    problem = tora[0].problem
    prompt = engine.chat_prompt([{"role": "user", "content": problem}])

    async def main() -> list[str]:
        out = []
        for i in range(3):
            r = await run_request(engine, prompt, GenParams(max_tokens=2000), f"r{i}")
            out.append(r.final.text)
        return out

    texts = asyncio.run(main())
    assert texts == [tora[0].text, tora[1319].text, tora[0].text]  # 70B, code-34B, 70B again


def test_unknown_problem_is_a_clear_error(tora: list[RecordedSample]) -> None:
    engine = ReplayEngine.from_samples(tora[:5])
    prompt = engine.chat_prompt([{"role": "user", "content": "What is the airspeed of an unladen swallow?"}])
    assert not engine.has_problem(prompt)
    with pytest.raises(ValueError, match=r"no recorded problem.*unladen swallow"):
        asyncio.run(run_request(engine, prompt, GenParams(max_tokens=10), "a"))
    with pytest.raises(ValueError, match="already running"):
        async def twice() -> None:
            p = engine.chat_prompt([{"role": "user", "content": tora[0].problem}])
            first = engine.generate(p, GenParams(max_tokens=1000), "dup")
            await first.__anext__()
            await run_request(engine, p, GenParams(max_tokens=10), "dup")
        asyncio.run(twice())

    lenient = ReplayEngine.from_samples(tora[:5], ReplayConfig(on_unknown="empty"))
    r = asyncio.run(run_request(lenient, prompt, GenParams(max_tokens=10), "a"))
    assert (r.final.text, r.final.tokens, r.final.finish_reason) == ("", 1, "stop")


def test_from_records_and_realtime_mode(tmp_path, tora: list[RecordedSample]) -> None:
    path = tmp_path / "records.jsonl"
    with RunRecorder(path) as rec:  # our own run records, as a dry-run writes them
        for i, s in enumerate((tora[0], tora[1319])):
            rec.write("sample", problem_id="p0", index=i, text=s.text, tokens=len(s.text) // 4, answer=1,
                      finish_reason="stop", started=0.0, finished=1.0 + i)
        rec.write("problem", problem_id="p0", problem=tora[0].problem, answer=1, gold=None)
    config = ReplayConfig(realtime=True, speedup=50.0, speed=SpeedModel.l4x4_7b_awq())
    engine = ReplayEngine.from_records(path, config)
    assert isinstance(engine.clock, RealClock)
    t0 = time.perf_counter()
    results = asyncio.run(run_samples(engine, tora[0].problem, 2))
    real = time.perf_counter() - t0
    assert [r.joined for r in results] == [tora[0].text, tora[1319].text]
    # ~230 tokens at ~13 ms a step is ~3 s of modelled time; 50× faster in real time
    assert 0.02 < real < 1.5
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x"}\n')  # not a run record: no version
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        ReplayEngine.from_records(bad)
