"""The Harmony protocol (gpt-oss) through the real solver: scripted token streams of real Harmony-rendered
messages on the scripted engine (virtual time), the real sandbox for the python tool.

Each test's script plays a model: what it writes depends on the prompt token ids it is sent (how many tool
results it holds), like a model reading its context.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from openai_harmony import Message, Role

from kit.offline.runs import read_events
from kit.runtime.confidence import token_entropy
from kit.runtime.engines.base import GenParams
from kit.runtime.prompts import HARMONY_TIR, PromptTemplate
from kit.runtime.protocols.harmony import CALL, RETURN, completion_ids, harmony_encoding
from kit.runtime.records import RunRecorder
from kit.runtime.solver import Solver, SolverConfig, sandbox_for
from kit.runtime.voting import Agreement, StopRules
from kit.sim.scripted import Completion, ScriptedEngine, ScriptedRequest

ENC = harmony_encoding()
PROBLEM = "What is six times seven?"
TOP5 = (-0.05, -3.2, -4.0, -5.5, -6.0)


def analysis(text: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("analysis")


def call(code: str, recipient: str = "python") -> Message:
    return analysis(code).with_recipient(recipient).with_content_type("code")


def final(text: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("final")


def said(*messages: Message, logprobs: bool = True) -> Completion:
    ids = tuple(completion_ids(messages))
    return Completion(ids, logprobs=tuple(TOP5 for _ in ids) if logprobs else None)


def turn(request: ScriptedRequest) -> int:
    """Tool results the prompt already holds = the model's turn number in this attempt."""
    return request.prompt.count(CALL)


def attempt(request: ScriptedRequest) -> int:
    """The attempt's index (the solver's request ids are problem:index:turn:nonce)."""
    return int(request.request_id.split(":")[1])


def seen(request: ScriptedRequest) -> str:
    return ENC.decode(list(request.prompt))


def config(n: int = 1, **kw) -> SolverConfig:
    kw.setdefault("max_tokens", 4000)
    kw.setdefault("prompts", (HARMONY_TIR,))
    return SolverConfig(n_samples=n, protocol="harmony", code_timeout=2.0, repetition_repeats=0, **kw)


@pytest.fixture(scope="module")
def sandbox():
    sb = sandbox_for(config(4))
    yield sb
    sb.shutdown()


def solve(script: Callable[[ScriptedRequest], Completion], cfg: SolverConfig, sandbox, recorder=None,
          problem: str = PROBLEM):
    engine = ScriptedEngine(script, decode=ENC.decode)
    solver = Solver(engine, cfg, profile="aimo3", sandbox=sandbox, recorder=recorder)
    return asyncio.run(solver.solve("p1", problem)), engine


# --- the loop -------------------------------------------------------------------------------------------


def test_a_tool_call_its_output_and_a_final_answer(sandbox, tmp_path: Path) -> None:
    def script(r: ScriptedRequest) -> Completion:
        if turn(r) == 0:
            return said(analysis("Let me compute."), call("x = 6 * 7\nx"))
        assert "<|start|>python to=assistant<|channel|>analysis<|message|>42<|end|>" in seen(r)
        return said(analysis("The tool says 42."), final("The product is \\boxed{42}."))

    recorder = RunRecorder(tmp_path / "records.jsonl")
    result, engine = solve(script, config(), sandbox, recorder)
    recorder.close()
    s = result.samples[0]
    assert (result.answer, s.finish_reason, s.error) == (42, "stop", None)
    assert [c["output"] for c in s.code] == ["42"] and s.code[0]["status"] == "ok"
    first, second = engine.requests
    assert second.prompt[: len(first.prompt)] == first.prompt  # the conversation only grows: prefix cache
    assert set(first.params.stop_token_ids) == {RETURN, CALL} and first.params.logprobs == 5
    assert "<|channel|>final<|message|>The product is \\boxed{42}.<|return|>" in s.text
    expected = token_entropy(TOP5)
    assert s.entropy_mean == pytest.approx(expected, abs=1e-6)
    assert s.entropy_tail == pytest.approx(expected, abs=1e-6) and s.entropy_median == pytest.approx(expected, abs=1e-6)
    [record] = read_events(tmp_path / "records.jsonl", "sample")
    assert record["entropy_mean"] == pytest.approx(expected, abs=1e-6) and record["entropy_tail"] is not None


def test_several_turns_share_one_python_session_with_the_prelude(sandbox) -> None:
    cells = ["a = 5", "a *= 3", "print(a + sp.Integer(1), np.int64(2), mpmath.mp.dps)"]

    def script(r: ScriptedRequest) -> Completion:
        t = turn(r)
        if t < len(cells):
            return said(call(cells[t]))
        return said(final("\\boxed{16}"))

    result, engine = solve(script, config(), sandbox)
    s = result.samples[0]
    assert result.answer == 16 and s.finish_reason == "stop"
    assert [c["output"] for c in s.code] == ["[WARN] No output. Use print() to see results."] * 2 + ["16 2 64"]
    assert len(engine.requests) == 4


def test_the_next_problem_gets_a_fresh_session(sandbox) -> None:
    def script(r: ScriptedRequest) -> Completion:
        if turn(r) == 0:
            return said(call("print('x' in globals()); x = 1"))
        return said(final("\\boxed{1}"))

    for _ in range(2):
        result, _ = solve(script, config(), sandbox)
        assert result.samples[0].code[0]["output"] == "False"


def test_parallel_attempts_stop_at_four_votes_and_the_rest_are_aborted(sandbox) -> None:
    def script(r: ScriptedRequest) -> Completion:
        i = attempt(r)
        if i < 4:  # short attempts agree
            return said(analysis("quick " * (5 + 3 * i)), final(f"\\boxed{{7}} (attempt {i})"))
        return Completion(tuple(completion_ids([analysis("still thinking")]))[:-1], repeat=(ENC.encode(" hmm")[0],))

    rules = StopRules(agreements=(Agreement(4, 4, "any"),), certain=False)
    engine = ScriptedEngine(script, decode=ENC.decode)
    solver = Solver(engine, config(8, max_tokens=20_000, rules=rules), profile="aimo3", sandbox=sandbox)
    result = asyncio.run(solver.solve("p1", PROBLEM))
    assert result.answer == 7 and result.reason == "agreement: 4 votes"
    assert sorted(s.index for s in result.samples if s.done) == [0, 1, 2, 3]
    slow = [s for s in result.samples if s.index >= 4]
    assert all(s.finish_reason in ("abort", "cancelled") for s in slow)
    assert all(s.tokens < 200 for s in slow)  # aborted at once, far from the 20,000-token budget
    assert engine.active_requests == []


# --- malformed output and misbehaving tools: each ends the attempt with a clear reason -----------------


def _never_closed(r: ScriptedRequest) -> Completion:
    opened = completion_ids([call("for i in range(10):\n    x = i")])[:-1]  # no <|call|>
    return Completion(tuple(opened), repeat=tuple(ENC.encode("\n    x += 1")))


def _endless_analysis(r: ScriptedRequest) -> Completion:
    return Completion(tuple(completion_ids([analysis("Let me think.")])[:-1]), repeat=tuple(ENC.encode(" Hmm.")))


MALFORMED = {
    "parse error": (lambda r: Completion((1, 2, 3, CALL)), "error", "cannot parse the completion"),
    "unknown recipient": (lambda r: said(call("search('aimo')", recipient="browser.search")), "error",
                          "unknown recipient 'browser.search'"),
    "call never closed": (_never_closed, "length", "the python call was never closed"),
    "no final channel": (lambda r: said(analysis("I give up.")), "error", "without a final-channel message"),
    "endless analysis": (_endless_analysis, "length", "no final answer within the token budget"),
    "eos mid-message": (lambda r: Completion(tuple(completion_ids([analysis("abc")])[:-1])), "error",
                        "without a final-channel message"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_harmony_ends_the_attempt_with_a_clear_reason(sandbox, case: str) -> None:
    script, reason, error = MALFORMED[case]
    result, _ = solve(script, config(max_tokens=300), sandbox)
    s = result.samples[0]
    assert s.finish_reason == reason and error in (s.error or ""), (s.finish_reason, s.error)
    assert 0 <= result.answer <= 99999 and "fallback" in result.reason


@pytest.mark.slow
def test_a_hanging_tool_is_reported_to_the_model_and_too_many_calls_end_the_attempt(sandbox) -> None:
    def script(r: ScriptedRequest) -> Completion:
        return said(call("while True:\n    pass"))

    result, _ = solve(script, config(max_code_calls=2), sandbox)
    s = result.samples[0]
    assert [c["status"] for c in s.code] == ["timeout", "timeout"]
    assert all(c["output"].startswith("[ERROR] The code timed out") for c in s.code)
    assert s.finish_reason == "turns" and "more tool calls than max_code_calls" in s.error


def test_a_flooding_tool_is_cut_head_and_tail(sandbox) -> None:
    def script(r: ScriptedRequest) -> Completion:
        if turn(r) == 0:
            return said(call("print('START' + 'x' * 10**7 + 'END')"))
        assert len(r.prompt) < 5000  # the flood never reached the context
        return said(final("\\boxed{3}"))

    result, _ = solve(script, config(), sandbox)
    s = result.samples[0]
    out = s.code[0]["output"]
    assert result.answer == 3 and s.code[0]["status"] == "truncated"
    assert out.startswith("START") and out.endswith("END") and len(out) < 5000


def test_an_answer_out_of_range_or_unreadable_is_an_abstention(sandbox) -> None:
    answers = iter(["\\boxed{123456}", "no box at all", "\\boxed{\\textbf{(C)}\\ 12}"])

    def script(r: ScriptedRequest) -> Completion:
        return said(final(next(answers)))

    result, _ = solve(script, config(3), sandbox)
    assert [s.answer for s in result.samples] == [None, None, 12] and result.answer == 12


def test_without_logprobs_the_entropy_fields_stay_empty(sandbox) -> None:
    result, _ = solve(lambda r: said(final("\\boxed{5}"), logprobs=False), config(logprobs=0), sandbox)
    s = result.samples[0]
    assert result.answer == 5 and (s.entropy_mean, s.entropy_tail) == (None, None)


def test_token_entropy_formula_on_a_hand_computed_case() -> None:
    # p = (1/2, 1/4, 1/4): H = 1/2·1 + 2·1/4·2 = 1.5 bits
    assert token_entropy([math.log(0.5), math.log(0.25), math.log(0.25)]) == pytest.approx(1.5)
    assert token_entropy([0.0]) == 0.0


def test_scripted_engine_honours_max_tokens_and_stop_ids() -> None:
    engine = ScriptedEngine(lambda r: Completion((5, 6, CALL, 8)), chunk_tokens=1)

    async def run(params: GenParams) -> tuple:
        last = None
        async for chunk in engine.generate([1, 2], params, f"r{len(engine.requests)}"):
            last = chunk
        return last.finish_reason, last.stop_reason, last.tokens

    assert asyncio.run(run(GenParams(max_tokens=10, stop_token_ids=(CALL,)))) == ("stop", CALL, 3)
    assert asyncio.run(run(GenParams(max_tokens=2))) == ("length", None, 2)
    assert asyncio.run(run(GenParams(max_tokens=10))) == ("stop", None, 4)


def test_a_text_template_without_the_tool_declares_no_tool(sandbox) -> None:
    cot = PromptTemplate(name="cot", kind="cot", user="{problem}\n{answer_rule}")
    result, engine = solve(lambda r: said(final("\\boxed{2}")), config(prompts=(cot,)), sandbox)
    assert result.answer == 2 and "python" not in seen(engine.requests[0])
    assert "python" in seen(solve(lambda r: said(final("\\boxed{2}")), config(), sandbox)[1].requests[0])


# --- real gpt-oss shapes: where an attempt stops and how its answer is read (docs/design.md "AIMO3") ----

DOUBT = " Let me double-check by another route." * 60


def test_a_box_in_analysis_ends_the_attempt_there_with_that_answer(sandbox) -> None:
    """The AIMO3 notebooks' stop: ~2/3 of real attempts end at a box streamed in the analysis channel."""
    completion = said(analysis("So the count is \\boxed{42}." + DOUBT), final("\\boxed{43}"))
    stopped, _ = solve(lambda r: completion, config(stop_at_first_boxed=True), sandbox)
    s = stopped.samples[0]
    assert (stopped.answer, s.finish_reason, s.error, s.raw_answer) == (42, "stop", None, "42")
    assert s.tokens < len(completion.ids) / 4 and "double-check" not in s.text  # the rest was never decoded
    # without the stop the same attempt runs to its final message, whose box is the last one
    full, _ = solve(lambda r: completion, config(stop_at_first_boxed=False), sandbox)
    assert (full.answer, full.samples[0].tokens) == (43, len(completion.ids))


def test_a_box_in_a_python_call_does_not_stop_the_attempt(sandbox) -> None:
    def script(r: ScriptedRequest) -> Completion:
        if turn(r) == 0:
            return said(call("print('\\\\boxed{5}')"))
        return said(final("\\boxed{6}"))

    result, _ = solve(script, config(stop_at_first_boxed=True), sandbox)
    assert result.answer == 6 and len(result.samples[0].code) == 1


@pytest.mark.parametrize("written", ["41754", "\\displaystyle 41754", "\\(\\displaystyle 41754\\)", "**41754**",
                                     "$41754$", "Answer: 41754", "**Answer:** 41754"])
def test_a_final_without_a_box_is_read_when_it_is_one_integer(sandbox, written: str) -> None:
    result, _ = solve(lambda r: said(analysis("Computed."), final(written)), config(stop_at_first_boxed=True), sandbox)
    s = result.samples[0]
    assert (result.answer, s.finish_reason, s.error) == (41754, "stop", None)


def test_a_final_sentence_is_read_by_the_phrase_rules_and_prose_is_no_answer(sandbox) -> None:
    said_it = ["The final answer is 325.", "We need 3 more steps to see it.", "**325** is the number of ways."]
    texts = iter(said_it)
    result, _ = solve(lambda r: said(final(next(texts))), config(3), sandbox)
    assert [s.answer for s in result.samples] == [325, None, None]


def test_a_box_followed_by_more_analysis_reads_the_last_box(sandbox) -> None:
    corrected = said(analysis("First guess \\boxed{12}." + DOUBT + " No: it is 13."), final("\\boxed{13}"))
    result, _ = solve(lambda r: corrected, config(), sandbox)
    assert result.answer == 13 and result.samples[0].finish_reason == "stop"
    # cut by max tokens before any final message: the box written so far is the (partial) answer
    cut, _ = solve(lambda r: corrected, config(max_tokens=40), sandbox)
    s = cut.samples[0]
    assert (s.finish_reason, s.raw_answer) == ("length", "12") and "no final answer" in s.error


def test_a_final_message_answer_wins_over_an_earlier_analysis_box(sandbox) -> None:
    """The final is what the model committed to after the analysis: its bare integer beats a box the
    analysis wrote before changing its mind."""
    result, _ = solve(lambda r: said(analysis("Maybe \\boxed{12}? No." + DOUBT), final("**13**")), config(), sandbox)
    assert result.answer == 13


def test_several_boxes_give_the_last_one_and_the_stop_takes_the_first_complete_one(sandbox) -> None:
    side_by_side = said(final("The cases give \\boxed{2}, \\boxed{3}"))
    assert solve(lambda r: side_by_side, config(), sandbox)[0].answer == 3
    two = said(analysis("Case one: \\boxed{5}. Case two: \\boxed{6}." + DOUBT))
    stopped, _ = solve(lambda r: two, config(stop_at_first_boxed=True), sandbox)
    assert (stopped.answer, stopped.samples[0].finish_reason) == (5, "stop")


def test_attempts_stopped_at_analysis_boxes_vote(sandbox) -> None:
    """Four attempts end at analysis boxes: their votes count (before, each was an error and dropped)."""
    def script(r: ScriptedRequest) -> Completion:
        i = attempt(r)
        if i < 4:
            return said(analysis("quick " * (5 + 3 * i) + "\\boxed{7}" + DOUBT))
        return Completion(tuple(completion_ids([analysis("still thinking")]))[:-1], repeat=(ENC.encode(" hmm")[0],))

    rules = StopRules(agreements=(Agreement(4, 4, "any"),), certain=False)
    engine = ScriptedEngine(script, decode=ENC.decode)
    cfg = config(8, max_tokens=20_000, rules=rules, stop_at_first_boxed=True)
    result = asyncio.run(Solver(engine, cfg, profile="aimo3", sandbox=sandbox).solve("p1", PROBLEM))
    assert result.answer == 7 and result.reason == "agreement: 4 votes"
    assert [s.finish_reason for s in result.samples[:4]] == ["stop"] * 4
