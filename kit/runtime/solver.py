"""One problem → one answer: samples with TIR turns, answers as samples finish, voting, early stop.

Everything the AIMO2 winners did inside ``predict`` lives here, on the async
:class:`~kit.runtime.engines.base.Engine` interface (vLLM on Kaggle, replay in tests and simulation):

* ``n`` samples launched at once from a prompt mix (CoT / TIR) and a sampling schedule (per-sample
  temperature / top-p / min-p), so vLLM batches them and prefix-caches the shared prompt;
* a sample stops at ``</think>``, or at its first complete ``\\boxed{}`` (``stop_at_first_boxed``), if
  configured; a sample that closes a code block is paused, the code runs in the sandbox while the other
  samples keep generating, the output is appended and the sample continues (up to the protocol's
  ``max_calls``) — where a turn ends (a tool call, an answer), how a tool's output is written back and how
  the answer is read is the conversation protocol's business (:mod:`kit.runtime.protocols`)
  (:class:`~kit.runtime.protocols.tir.TIRFormat`);
* a sample looping on the same text is stopped;
* after every finished sample a :class:`~kit.runtime.voting.Ballot` decides whether the question is
  settled, and the remaining samples are aborted (they stop consuming tokens at once); the answer a stop
  names is the answer submitted;
* at the deadline everything is aborted and the vote uses what exists, partial samples included;
* answer normalisation (sympy in a helper process, up to seconds) and token counting run in threads, so
  they never stall the streams or the deadline watchdog;
* the result is always an integer in the profile's range and the run record gets every sample and the
  decision — also when the caller cancels the solve (``predict``'s timeout): :meth:`Solver.solve` never
  raises anything but that cancellation, and records it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import traceback
from dataclasses import asdict
from typing import Any

from kit.runtime.confidence import Confidence
from kit.runtime.engines.base import Engine, EngineDead, GenParams
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.protocols import make_protocol
from kit.runtime.protocols.base import Conversation, Cut, Protocol, Request
from kit.runtime.records import RunRecorder
from kit.runtime.results import DONE_REASONS, ProblemResult, SampleResult
from kit.runtime.sandbox import Sandbox, Status
from kit.runtime.solver_config import (
    SAMPLING_PRESETS,
    TINY_SOLVER,
    SamplingSpec,
    SolverConfig,
    sample_seed,
)
from kit.runtime.voting import Ballot, Decision, StopRules, Vote, majority, tally

__all__ = [
    "DONE_REASONS", "MAX_PROBLEM_CHARS", "SAMPLING_PRESETS", "TINY_SOLVER", "ProblemResult", "SampleResult",
    "SamplingSpec", "Solver", "SolverConfig", "clean_problem", "is_looping", "sample_seed", "sandbox_for",
]

MAX_PROBLEM_CHARS = 20_000
"""Problems longer than this are cut (head and tail kept); real olympiad problems are < 2,000 chars."""
MIN_GENERATION = 16
"""A prompt that leaves fewer tokens than this of the context window cannot produce an answer."""


def is_looping(text: str, min_period: int, max_period: int, repeats: int) -> bool:
    """Whether ``text`` ends with one unit (``min_period``..``max_period`` chars) repeated ``repeats`` times.

    Candidate periods come from earlier occurrences of the last ``min_period`` characters (``rfind``), so
    a check costs microseconds and can run every few dozen characters of a stream.
    """
    n = len(text)
    if min_period < 1 or n < min_period * repeats:
        return False
    probe = text[n - min_period :]
    lo = max(0, n - max_period - min_period)
    pos = text.rfind(probe, lo, n - 1)
    while pos >= 0:
        period = n - min_period - pos
        if period >= min_period and period * repeats <= n:
            unit = text[n - period :]
            if unit.strip() and text.endswith(unit * repeats):
                return True
        pos = text.rfind(probe, lo, pos + min_period - 1)
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_problem(problem: Any) -> str:
    """The problem as text: bytes decoded (bad bytes replaced), lone surrogates replaced (no tokenizer or
    renderer takes them: Harmony's fails on one), NULs dropped, a huge text cut (head + tail)."""
    if isinstance(problem, (bytes, bytearray)):
        problem = bytes(problem).decode("utf-8", errors="replace")
    if not isinstance(problem, str):
        problem = "" if problem is None else str(problem)
    problem = _SURROGATE.sub("\ufffd", problem.replace("\x00", ""))
    if len(problem) > MAX_PROBLEM_CHARS:
        half = MAX_PROBLEM_CHARS // 2
        problem = problem[:half] + "\n[...]\n" + problem[-half:]
    return problem


def sandbox_for(config: SolverConfig) -> Sandbox | None:
    """A started sandbox when the prompt mix has TIR prompts (sized to the samples), else None, with the
    settings the protocol's tool needs (Harmony: a bare last expression printed, the AIMO3 prelude)."""
    if not any(p.kind == "tir" for p in config.prompts):
        return None
    sandbox = make_protocol(config).tool_sandbox(config.sandbox)
    return Sandbox(config=sandbox, workers=min(config.n_samples, 8), timeout=config.code_timeout).start()


class _Problem:
    """Mutable state of one ``solve`` call."""

    def __init__(self, problem_id: str, start: float) -> None:
        self.problem_id = problem_id
        self.problem = ""
        self.start = start
        self.live: set[str] = set()
        self.stopping = False
        self.samples: list[SampleResult] = []
        self.recorded: set[int] = set()
        """Indices of samples whose record is written."""
        self.conversations: dict[int, Conversation] = {}
        self.first_index = 0
        self.engine_dead: str | None = None
        """Why the engine died during this solve (:class:`~kit.runtime.engines.base.EngineDead`), or None."""


class Solver:
    """Solves problems on an engine; one instance serves a whole run."""

    def __init__(self, engine: Engine, config: SolverConfig | None = None, *,
                 profile: Profile | str | None = None, sandbox: Sandbox | None = None,
                 recorder: RunRecorder | None = None) -> None:
        self.engine = engine
        self.config = config or SolverConfig()
        self.profile = get_profile(profile)
        self.sandbox = sandbox
        self.recorder = recorder
        self.protocol: Protocol = make_protocol(self.config)
        self.last: ProblemResult | None = None
        """The result of the latest solve or skip, on every path out of it (cancellation included)."""
        if any(p.kind == "tir" for p in self.config.prompts) and sandbox is None:
            raise ValueError("the prompt mix has TIR prompts: pass a Sandbox to the Solver")

    # --- public --------------------------------------------------------------------------------

    async def solve(self, problem_id: str, problem: str | bytes, *, deadline: float | None = None,
                    n_samples: int | None = None, max_tokens: int | None = None,
                    rules: StopRules | None = None, gold: int | None = None,
                    first_index: int = 0) -> ProblemResult:
        """Answer one problem before ``deadline`` (an ``engine.clock`` time).

        Never raises, except :class:`asyncio.CancelledError` when the caller cancels the solve — after the
        samples, the problem record (reason ``cancelled``) and the closing of the sandbox sessions.
        ``n_samples``, ``max_tokens`` and ``rules`` override the config for this problem (the time bank's
        budget); the config's values are the defaults. ``first_index`` numbers the samples from there (a
        problem retried after an engine restart keeps its first samples' records apart)."""
        state = _Problem(str(problem_id), self.engine.clock.now())
        state.first_index = first_index
        result: ProblemResult | None = None
        try:
            state.problem = clean_problem(problem)
            if not state.problem.strip():
                result = self._fallback(state, "empty problem text")
            else:
                result = await self._solve(state, deadline, n_samples or self.config.n_samples,
                                           max_tokens or self.config.max_tokens, rules or self.config.rules)
        except asyncio.CancelledError:
            result = self._fallback(state, "cancelled: the caller stopped waiting for this problem",
                                    reason="cancelled")
            raise
        except Exception as exc:  # the submission path must never raise into the gateway
            result = self._fallback(state, f"{type(exc).__name__}: {exc}", detail=traceback.format_exc(limit=6))
        finally:
            self._finish(state, result, gold)
        return result

    def skip(self, problem_id: str, reason: str, *, problem: str = "", gold: int | None = None) -> ProblemResult:
        """Answer with the fallback without generating (e.g. the time limit is already reached)."""
        state = _Problem(str(problem_id), self.engine.clock.now())
        state.problem = clean_problem(problem)
        result = self._fallback(state, reason, reason="skipped")
        self._finish(state, result, gold)
        return result

    # --- one problem -----------------------------------------------------------------------------

    def _fallback(self, state: _Problem, error: str, *, detail: str | None = None,
                  reason: str = "error") -> ProblemResult:
        """Whatever the finished samples say (plain majority), else the profile's fallback answer."""
        votes = [Vote(s.answer, order=i) for i, s in enumerate(state.samples) if s.done and s.answer is not None]
        answer = majority(votes) if votes else None
        return ProblemResult(
            problem_id=state.problem_id,
            answer=answer if answer is not None else self.profile.fallback_answer,
            reason=reason, samples=state.samples, tally=tally(votes),
            tokens=sum(s.tokens for s in state.samples), seconds=self.engine.clock.now() - state.start,
            error=error + (f"\n{detail}" if detail else ""), prompt_tokens=_mean_prompt(state.samples))

    async def _solve(self, state: _Problem, deadline: float | None, n: int, budget: int,
                     rules: StopRules) -> ProblemResult:
        if not await self._before(self._open(state, n), deadline):  # a slow tokenizer must not pass it either
            return self._fallback(state, "deadline: the prompts could not be counted in time", reason="deadline")
        limit = self.engine.max_model_len
        runnable = [i for i, s in enumerate(state.samples) if s.prompt_tokens + MIN_GENERATION <= limit]
        if not runnable:
            longest = max(s.prompt_tokens for s in state.samples)
            return self._fallback(state, f"problem too long for the context window: the longest prompt has "
                                         f"{longest} tokens, max_model_len {limit}")
        for i, s in enumerate(state.samples):
            if i not in runnable:
                s.finish_reason, s.finished = "error", state.start
                s.error = f"prompt of {s.prompt_tokens} tokens does not fit max_model_len {limit}"
        tasks = {asyncio.create_task(self._run_sample(state, state.samples[i], budget)): i for i in runnable}
        ballot = Ballot(rules)
        pending: set[asyncio.Task] = set(tasks)
        try:
            ended = await self._race(state, tasks, pending, ballot, deadline)
        finally:
            await self._stop(state, pending)
        await self._read_unfinished(state)
        partials: list[Vote] = []
        if ended == "deadline":
            partials = [_vote(s, order=len(ballot.votes) + k, weight=self.config.partial_weight)
                        for k, s in enumerate(state.samples[tasks[t]] for t in sorted(pending, key=tasks.get))
                        if s.answer is not None]
        final: Decision = ballot.final(partials)
        reason = ballot.stopped.reason if ballot.stopped is not None else ended
        chosen = final.answer
        return ProblemResult(
            problem_id=state.problem_id,
            answer=chosen if chosen is not None else self.profile.fallback_answer,
            reason=reason if chosen is not None else f"{reason}; no answer: fallback",
            samples=state.samples, tally=ballot.tally(partials),
            tokens=sum(s.tokens for s in state.samples), seconds=self.engine.clock.now() - state.start,
            prompt_tokens=_mean_prompt(state.samples), engine_dead=state.engine_dead)

    async def _before(self, work: Any, deadline: float | None) -> bool:
        """Run ``work`` (a coroutine) to its end unless the deadline (on the engine's clock) comes first;
        whether it finished."""
        if deadline is None:
            await work
            return True
        clock = self.engine.clock
        task = asyncio.ensure_future(work)
        dog = asyncio.ensure_future(clock.sleep(deadline - clock.now()))
        try:
            await asyncio.wait({task, dog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dog.cancel()
            if not task.done():
                task.cancel()
        if task.cancelled():
            return False
        task.result()
        return True

    async def _open(self, state: _Problem, n: int) -> None:
        """Every sample's record and conversation (the protocol renders and counts its prompt)."""
        cfg = self.config
        for i in range(n):
            template = cfg.prompts[i % len(cfg.prompts)]
            spec = cfg.sampling[i % len(cfg.sampling)]
            state.samples.append(SampleResult(index=state.first_index + i, prompt=template.name, kind=template.kind,
                                              temperature=spec.temperature, top_p=spec.top_p, min_p=spec.min_p,
                                              agent=i % len(cfg.sampling), started=state.start))
        for s in state.samples:
            template = cfg.prompts[s.index % len(cfg.prompts)]
            conv = await self.protocol.open(template, state.problem, self.profile.modulus_wording, self.engine,
                                            self._off_loop)
            state.conversations[s.index] = conv
            s.prompt_tokens = conv.prompt_tokens

    async def _race(self, state: _Problem, tasks: dict[asyncio.Task, int], pending: set[asyncio.Task],
                    ballot: Ballot, deadline: float | None) -> str:
        """Wait for samples; after each finished one ask the ballot. Returns "deadline", "stopped" or
        "all finished"; ``pending`` keeps the tasks still running."""
        clock = self.engine.clock
        watchdog = asyncio.create_task(clock.sleep(deadline - clock.now())) if deadline is not None else None
        try:
            while pending:
                waiters = pending | ({watchdog} if watchdog is not None else set())
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finished = [t for t in done if t is not watchdog]
                pending.difference_update(finished)
                for t in sorted(finished, key=lambda t: (state.samples[tasks[t]].finished or 0.0, tasks[t])):
                    s = state.samples[tasks[t]]
                    self._record_sample(state, s)
                    if s.done:
                        ballot.add(_vote(s, order=len(ballot.votes)))
                if watchdog is not None and watchdog in done:
                    return "deadline"
                if state.engine_dead is not None:  # every other request fails too: stop at once
                    return "engine dead"
                if pending and self.config.early_stop and ballot.check(len(pending)).stop:
                    return "stopped"
            return "all finished"
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _stop(self, state: _Problem, pending: set[asyncio.Task]) -> None:
        """Abort every live request, let samples wind down briefly, cancel the rest (bounded in time even
        when the engine does not answer)."""
        state.stopping = True
        grace = self.config.abort_grace
        try:
            if state.live:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.engine.abort(list(state.live)), timeout=grace)
            if pending:
                _, still = await asyncio.wait(pending, timeout=grace)
                for t in still:
                    t.cancel()
                if still:
                    await asyncio.wait(still, timeout=grace)
        finally:
            # the caller may cancel the solve while it winds down after its own deadline (predict's margin
            # runs out during the grace): no sample may outlive its problem, streaming into the next one
            for t in pending:
                if not t.done():
                    t.cancel()

    async def _read_unfinished(self, state: _Problem) -> None:
        """Answers of the samples cut before they could read their own (cancelled mid-generation): the
        deadline vote counts them as partial answers. Bounded by ``abort_grace`` in all."""
        todo = [s for s in state.samples if s.raw_answer is None and s.text and s.finish_reason == "cancelled"]
        if not todo:
            return
        reads = [asyncio.ensure_future(self._read_answer(s, state.conversations[s.index])) for s in todo]
        _, late = await asyncio.wait(reads, timeout=self.config.abort_grace)
        for r in late:
            r.cancel()

    # --- one sample ------------------------------------------------------------------------------

    def _params(self, problem_id: str, index: int, turn: int, max_tokens: int, request: Request) -> GenParams:
        cfg = self.config
        spec = cfg.sampling[index % len(cfg.sampling)]
        return GenParams(max_tokens=max_tokens, temperature=spec.temperature, top_p=spec.top_p,
                         min_p=spec.min_p, top_k=spec.top_k, seed=sample_seed(cfg.seed, problem_id, index, turn),
                         stop=request.stop, stop_token_ids=request.stop_token_ids, include_stop_str_in_output=True,
                         logprobs=cfg.logprobs)

    def _calls_allowed(self, sample: SampleResult) -> bool:
        return sample.kind == "tir" and len(sample.code) < self.protocol.max_calls

    async def _run_sample(self, state: _Problem, sample: SampleResult, budget: int) -> SampleResult:
        engine = self.engine
        conv = state.conversations[sample.index]
        confidence = Confidence()
        turn = 0
        try:
            while True:
                left = min(budget - sample.tokens, engine.max_model_len - conv.context_tokens)
                if left <= 0:
                    sample.finish_reason = "length" if budget - sample.tokens <= 0 else "context"
                    break
                if state.stopping:
                    sample.finish_reason = "abort"
                    break
                calls = self._calls_allowed(sample)
                request = conv.request(calls)
                rid = f"{state.problem_id}:{sample.index}:{turn}:{time.monotonic_ns()}"
                params = self._params(state.problem_id, sample.index, turn, left, request)
                reason, text, ids, used, cut = await self._stream(state, rid, request, params, conv, confidence)
                sample.tokens += used
                end = conv.end_turn(text, ids, used, reason, cut, calls)
                sample.text = conv.transcript
                if end.kind != "call":
                    sample.finish_reason, sample.error = end.reason, end.error
                    break
                await self._execute(state, sample, conv, end.code)
                turn += 1
        except asyncio.CancelledError:
            sample.finish_reason, sample.finished = "cancelled", engine.clock.now()
            _summarise(sample, confidence, self.config.entropy_tail)
            raise
        except EngineDead as exc:
            state.engine_dead = state.engine_dead or str(exc)
            sample.finish_reason, sample.error = "error", f"engine dead: {exc}"
        except Exception as exc:
            sample.finish_reason = "error"
            sample.error = f"{type(exc).__name__}: {exc}"
        sample.finished = engine.clock.now()
        _summarise(sample, confidence, self.config.entropy_tail)
        await self._read_answer(sample, conv)
        return sample

    async def _stream(self, state: _Problem, rid: str, request: Request, params: GenParams, conv: Conversation,
                      confidence: Confidence) -> tuple[str, str, list[int], int, Cut | None]:
        """Run one request; returns (why it ended, its text, its token ids, tokens used, where the protocol
        cut the turn: a tool call or an answer)."""
        cfg = self.config
        text, tokens, finish = "", 0, "stop"
        ids: list[int] = []
        checked = 0
        state.live.add(rid)
        stream = self.engine.generate(request.prompt, params, rid)
        cut: Cut | None = None
        reason: str | None = None
        try:
            async for chunk in stream:
                text, tokens = chunk.text, chunk.tokens
                ids += chunk.delta_ids
                if chunk.delta_logprobs:
                    confidence.add(chunk.delta_logprobs)
                if chunk.finished:
                    finish = chunk.finish_reason or "stop"
                    break
                cut = conv.watch(chunk)
                if cut is not None:
                    reason = "cut"
                    break
                if cfg.repetition_repeats and len(text) - checked >= 64:
                    checked = len(text)
                    if is_looping(text, *cfg.repetition_period, cfg.repetition_repeats):
                        reason = "repetition"
                        break
        finally:
            state.live.discard(rid)
            if reason is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.engine.abort([rid]), timeout=cfg.abort_grace)
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        if reason == "cut":
            return "stop", text, ids, tokens, cut
        return reason or finish, text, ids, tokens, None

    async def _execute(self, state: _Problem, sample: SampleResult, conv: Conversation, code: str) -> None:
        """Run a tool call's code in the sample's sandbox session and hand the result to the conversation."""
        assert self.sandbox is not None
        with self.engine.clock.hold():
            result = await self.sandbox.arun(code, session=_session(state.problem_id, sample.index),
                                             timeout=self.config.code_timeout)
        shown = await conv.add_output(result, self._off_loop)
        sample.text = conv.transcript
        sample.code.append({"code": code, "status": result.status.value, "output": shown,
                            "seconds": round(result.seconds, 4)})
        if result.status is Status.KILLED:
            sample.code[-1]["note"] = "sandbox process died"

    async def _read_answer(self, sample: SampleResult, conv: Conversation | None) -> None:
        """Extract and normalise the sample's answer in a thread (sympy may take seconds)."""
        sample.raw_answer = await self._off_loop(conv.raw_answer) if conv is not None else None
        sample.answer = await self._off_loop(self.profile.to_answer, sample.raw_answer) \
            if sample.raw_answer is not None else None

    async def _off_loop(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a worker thread; the virtual clock (replay) is held meanwhile, so the work takes
        no virtual time, and on the real clock the event loop keeps streaming and watching the deadline."""
        with self.engine.clock.hold():
            return await asyncio.to_thread(fn, *args)

    # --- records --------------------------------------------------------------------------------

    def _record_sample(self, state: _Problem, s: SampleResult) -> None:
        if s.index in state.recorded:
            return
        state.recorded.add(s.index)
        if self.recorder is not None:
            self.recorder.write("sample", problem_id=state.problem_id, **asdict(s))

    def _finish(self, state: _Problem, result: ProblemResult | None, gold: int | None) -> None:
        """Close the sandbox sessions, then write every sample not yet recorded and the problem event (the
        recorder never raises: records never cost an answer). Runs on every path out of a solve (answer,
        error, cancellation). The problem event carries the (cleaned)
        problem text, so records alone are enough for evaluation and for training on them."""
        self.last = result
        if self.sandbox is not None:  # first: nothing below may leave a session open
            for s in state.samples:
                with contextlib.suppress(Exception):
                    self.sandbox.close(_session(state.problem_id, s.index))
        for s in state.samples:
            if s.finish_reason == "pending":
                s.finish_reason = "cancelled"
            self._record_sample(state, s)
        if self.recorder is None or result is None:
            return
        self.recorder.write(
            "problem", problem_id=result.problem_id, problem=state.problem, answer=result.answer, gold=gold,
            correct=None if gold is None else result.answer == gold, reason=result.reason,
            tally={str(k): v for k, v in result.tally.items()}, tokens=result.tokens,
            seconds=round(result.seconds, 4), samples=len(result.samples),
            samples_finished=result.samples_finished, code_calls=result.code_calls, error=result.error,
        )


def _vote(s: SampleResult, *, order: int, weight: float = 1.0) -> Vote:
    return Vote(s.answer, weight=weight, order=order, tokens=s.tokens, kind=s.vote_kind,
                entropy=s.entropy_mean, entropy_tail=s.entropy_tail)


def _summarise(sample: SampleResult, confidence: Confidence, tail: int) -> None:
    stats = confidence.summary(tail)
    sample.entropy_mean, sample.entropy_tail, sample.entropy_median = (
        stats["entropy_mean"], stats["entropy_tail"], stats["entropy_median"])


def _session(problem_id: str, index: int) -> str:
    return f"{problem_id}:{index}"


def _mean_prompt(samples: list[SampleResult]) -> int:
    return round(sum(s.prompt_tokens for s in samples) / len(samples)) if samples else 0
