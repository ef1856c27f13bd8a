"""One problem → one answer: samples with TIR turns, answers as samples finish, voting, early stop.

Everything the AIMO2 winners did inside ``predict`` lives here, on the async :class:`~kit.runtime.engines.Engine`
interface (vLLM on Kaggle, replay in tests and simulation):

* ``n`` samples launched at once from a prompt mix (CoT / TIR) and a sampling schedule (per-sample
  temperature / top-p / min-p), so vLLM batches them and prefix-caches the shared prompt;
* a sample stops at ``</think>`` (or at its first complete ``\\boxed{}``) if configured; a sample that
  closes a code block is paused, the code runs in the sandbox while the other samples keep generating,
  the output block is appended and the sample continues (up to ``max_code_calls``);
* a sample looping on the same text is stopped;
* after every finished sample the voting module decides whether the question is settled, and the
  remaining samples are aborted (they stop consuming tokens at once);
* at the deadline everything is aborted and the vote uses what exists, partial samples included;
* the result is always an integer in the profile's range (the fallback when nothing was found) and the
  run record gets every sample and the decision. :meth:`Solver.solve` never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
import zlib
from dataclasses import asdict, dataclass, field

from kit.runtime.answers import extract_answer, has_complete_box
from kit.runtime.engines.base import Engine, GenParams
from kit.runtime.profiles import Profile, get_profile
from kit.runtime.prompts import DEFAULT_PROMPTS, PromptTemplate
from kit.runtime.records import RunRecorder
from kit.runtime.sandbox import Sandbox, Status, extract_code, format_output, get_format
from kit.runtime.voting import StopRules, Vote, decided, majority, tally

MAX_PROBLEM_CHARS = 20_000
"""Problems longer than this are cut (head and tail kept); real olympiad problems are < 2,000 chars."""


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float = 1.0
    top_p: float = 0.9
    min_p: float = 0.05
    top_k: int = 0


SAMPLING_PRESETS: dict[str, tuple[SamplingSpec, ...]] = {
    "default": (SamplingSpec(),),
    "trimer": tuple(SamplingSpec(temperature=t, top_p=p, min_p=0.0)
                    for t, p in ((0.2, 0.85), (0.4, 0.90), (0.6, 0.92), (0.8, 0.95))),
}
"""Named per-sample sampling schedules (``SolverConfig.sampling_preset``); sample i uses agent i mod n.
``trimer``: the AIMO2 TriMER team's four agents (temperatures 0.2/0.4/0.6/0.8, top-p 0.85/0.90/0.92/0.95;
their write-up gives no min-p, so none), whose varied samples they then reranked with a reward model."""


@dataclass(frozen=True)
class SolverConfig:
    n_samples: int = 32
    """Samples per problem; with a time bank (dry-run, submission) an upper bound the bank sizes within."""
    max_tokens: int = 12_000
    """Generated tokens per sample, all TIR turns together (also an upper bound under a time bank)."""
    prompts: tuple[PromptTemplate, ...] = DEFAULT_PROMPTS
    """Cycled over the samples (sample i uses prompts[i % len])."""
    sampling: tuple[SamplingSpec, ...] = (SamplingSpec(),)
    """Cycled over the samples: a multi-agent temperature/top-p schedule is a list here."""
    sampling_preset: str | None = None
    """A named schedule from ``SAMPLING_PRESETS`` (e.g. ``trimer``) used as ``sampling``."""
    stop_after_reasoning: bool = True
    """Stop a sample at ``</think>``: the answer is the last ``\\boxed{}`` of the reasoning."""
    stop_at_first_boxed: bool = False
    max_code_calls: int = 4
    tir_format: str = "qwen"
    code_timeout: float = 10.0
    early_stop: bool = True
    rules: StopRules = field(default_factory=StopRules)
    partial_weight: float = 0.5
    """Vote weight of an answer read from a sample cut off by the deadline."""
    repetition_period: tuple[int, int] = (16, 2000)
    """Shortest and longest repeated unit (characters) that counts as a loop."""
    repetition_repeats: int = 8
    """Consecutive repeats of one unit that stop a sample (0 disables the check). Greedy long-CoT traces
    loop on whole paragraphs (14 of the 330 SkyThought AIME24 samples repeat one 6+ times)."""
    seed: int = 0
    abort_grace: float = 2.0
    """Seconds to wait for aborted samples to wind down before their tasks are cancelled."""

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.prompts:
            raise ValueError("prompts must not be empty")
        if not self.sampling:
            raise ValueError("sampling must not be empty")
        if self.sampling_preset is not None:
            preset = SAMPLING_PRESETS.get(self.sampling_preset)
            if preset is None:
                raise ValueError(f"unknown sampling_preset {self.sampling_preset!r}; "
                                 f"known: {', '.join(sorted(SAMPLING_PRESETS))}")
            if self.sampling not in (preset, (SamplingSpec(),)):
                raise ValueError("set either sampling or sampling_preset, not both")
            object.__setattr__(self, "sampling", preset)


TINY_SOLVER = SolverConfig(n_samples=4, max_tokens=192, max_code_calls=2, code_timeout=5.0)
"""Settings for the built-in tiny model on CPU (dry-run, rehearsal): enough to exercise every path."""


DONE_REASONS = frozenset({"stop", "length", "repetition", "context"})
"""Finish reasons of samples that ended on their own; aborted/cancelled/errored ones were cut by early
stopping or a failure, not by the model. Votes, evaluation and training targets count only these."""


@dataclass
class SampleResult:
    index: int
    prompt: str
    kind: str
    temperature: float
    top_p: float
    min_p: float = 0.0
    agent: int = 0
    """Position in the sampling schedule (``SolverConfig.sampling``) this sample used."""
    text: str = ""
    tokens: int = 0
    code: list[dict] = field(default_factory=list)
    raw_answer: str | None = None
    answer: int | None = None
    finish_reason: str = "pending"
    """stop | length | abort | repetition | context | error | cancelled | pending."""
    started: float = 0.0
    finished: float | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason in DONE_REASONS


@dataclass
class ProblemResult:
    problem_id: str
    answer: int
    reason: str
    """Why solving stopped: an agreement rule, "certain", "all finished", "deadline", or an error."""
    samples: list[SampleResult]
    tally: dict[int, float]
    tokens: int
    seconds: float
    error: str | None = None

    @property
    def samples_finished(self) -> int:
        return sum(s.done for s in self.samples)

    @property
    def code_calls(self) -> int:
        return sum(len(s.code) for s in self.samples)


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


def sample_seed(base: int, problem_id: str, index: int, turn: int = 0) -> int:
    """Deterministic per-sample seed: same run config → same samples (AIMO3 reruns the notebook twice),
    different problems → different random streams."""
    return (base * 1_000_003 + zlib.crc32(problem_id.encode()) * 7919 + index * 1009 + turn) % (2**31 - 1)


def _code_block_end(text: str, start_marker: str, end_marker: str) -> int | None:
    """Index just after the closing marker of the last code block, if that block is closed."""
    pos = text.rfind(start_marker)
    if pos < 0:
        return None
    body_start = pos + len(start_marker)
    end = text.find(end_marker, body_start)
    if end < 0:
        return None
    return end + len(end_marker)


def sandbox_for(config: SolverConfig) -> Sandbox | None:
    """A started sandbox when the prompt mix has TIR prompts (sized to the samples), else None."""
    if not any(p.kind == "tir" for p in config.prompts):
        return None
    return Sandbox(workers=min(config.n_samples, 8), timeout=config.code_timeout).start()


class _Problem:
    """Mutable state of one ``solve`` call."""

    def __init__(self, problem_id: str, problem: str) -> None:
        self.problem_id = problem_id
        self.problem = problem
        self.live: set[str] = set()
        self.stopping = False
        self.samples: list[SampleResult] = []


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
        self.tir = get_format(self.config.tir_format)
        if any(p.kind == "tir" for p in self.config.prompts) and sandbox is None:
            raise ValueError("the prompt mix has TIR prompts: pass a Sandbox to the Solver")

    # --- public --------------------------------------------------------------------------------

    async def solve(self, problem_id: str, problem: str | bytes, *, deadline: float | None = None,
                    n_samples: int | None = None, max_tokens: int | None = None,
                    rules: StopRules | None = None, gold: int | None = None) -> ProblemResult:
        """Answer one problem before ``deadline`` (an ``engine.clock`` time). Never raises.

        ``n_samples``, ``max_tokens`` and ``rules`` override the config for this problem (the time bank's
        budget); the config's values are the defaults."""
        clock = self.engine.clock
        start = clock.now()
        state = _Problem(str(problem_id), "")
        try:
            text = self._clean_problem(problem)
            state.problem = text
            if not text.strip():
                result = self._fallback(state, start, "empty problem text")
            else:
                result = await self._solve(state, text, start, deadline, n_samples, max_tokens,
                                           rules or self.config.rules)
        except Exception as exc:  # the submission path must never raise into the gateway
            tb = traceback.format_exc(limit=6)
            result = self._fallback(state, start, f"{type(exc).__name__}: {exc}", detail=tb)
        self._record_problem(result, state.problem, gold)
        return result

    def skip(self, problem_id: str, reason: str, *, problem: str = "", gold: int | None = None) -> ProblemResult:
        """Answer with the fallback without generating (e.g. the time limit is already reached)."""
        result = self._fallback(_Problem(str(problem_id), problem), self.engine.clock.now(), reason)
        self._record_problem(result, problem, gold)
        return result

    # --- internals -------------------------------------------------------------------------------

    def _clean_problem(self, problem: str | bytes) -> str:
        if isinstance(problem, (bytes, bytearray)):
            problem = bytes(problem).decode("utf-8", errors="replace")
        if not isinstance(problem, str):
            problem = "" if problem is None else str(problem)
        problem = problem.replace("\x00", "")
        if len(problem) > MAX_PROBLEM_CHARS:
            half = MAX_PROBLEM_CHARS // 2
            problem = problem[:half] + "\n[...]\n" + problem[-half:]
        return problem

    def _fallback(self, state: _Problem, start: float, error: str, detail: str | None = None) -> ProblemResult:
        votes = [Vote(s.answer, order=i) for i, s in enumerate(state.samples) if s.answer is not None]
        answer = majority(votes) if votes else None
        return ProblemResult(
            problem_id=state.problem_id,
            answer=answer if answer is not None else self.profile.fallback_answer,
            reason="error" if detail or error else "fallback",
            samples=state.samples,
            tally=tally(votes),
            tokens=sum(s.tokens for s in state.samples),
            seconds=self.engine.clock.now() - start,
            error=error + (f"\n{detail}" if detail else ""),
        )

    async def _solve(self, state: _Problem, problem: str, start: float, deadline: float | None,
                     n_samples: int | None, max_tokens: int | None, rules: StopRules) -> ProblemResult:
        cfg = self.config
        n = n_samples or cfg.n_samples
        budget = max_tokens or cfg.max_tokens
        clock = self.engine.clock
        prompts = []
        for i in range(n):
            template = cfg.prompts[i % len(cfg.prompts)]
            spec = cfg.sampling[i % len(cfg.sampling)]
            prompt = self.engine.chat_prompt(template.messages(problem, self.profile.modulus_wording))
            prompts.append(prompt)
            state.samples.append(SampleResult(index=i, prompt=template.name, kind=template.kind,
                                              temperature=spec.temperature, top_p=spec.top_p, min_p=spec.min_p,
                                              agent=i % len(cfg.sampling), started=start))
        prompt_tokens = self.engine.count_tokens(prompts[0])
        if prompt_tokens + 16 > self.engine.max_model_len:
            return self._fallback(state, start, f"problem too long for the context window: {prompt_tokens} "
                                                f"prompt tokens, max_model_len {self.engine.max_model_len}")
        tasks = {asyncio.create_task(self._run_sample(state, i, prompts[i], budget)): i for i in range(n)}
        watchdog = asyncio.create_task(clock.sleep(deadline - clock.now())) if deadline is not None else None
        votes: list[Vote] = []
        reason = "all finished"
        pending = set(tasks)
        try:
            while pending:
                waiters = pending | ({watchdog} if watchdog is not None else set())
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finished = [t for t in done if t is not watchdog]
                pending -= set(finished)
                for t in sorted(finished, key=lambda t: (state.samples[tasks[t]].finished or 0.0, tasks[t])):
                    s = state.samples[tasks[t]]
                    self._record_sample(state, s)
                    if s.done:
                        votes.append(Vote(s.answer, order=len(votes), tokens=s.tokens, kind=s.kind))
                if watchdog is not None and watchdog in done:
                    reason = "deadline"
                    break
                if not pending:
                    break
                if cfg.early_stop:
                    decision = decided(votes, running=len(pending), rules=rules)
                    if decision.stop:
                        reason = decision.reason
                        break
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await self._stop(state, pending)
        for t in pending:
            s = state.samples[tasks[t]]
            self._record_sample(state, s)
        if reason == "deadline":
            votes += [Vote(s.answer, weight=cfg.partial_weight, order=len(votes) + k, tokens=s.tokens, kind=s.kind)
                      for k, s in enumerate(state.samples[tasks[t]] for t in sorted(pending, key=tasks.get))
                      if s.answer is not None]
        chosen = majority(votes, rules.weighting, rules.tie_break)
        return ProblemResult(
            problem_id=state.problem_id,
            answer=chosen if chosen is not None else self.profile.fallback_answer,
            reason=reason if chosen is not None else f"{reason}; no answer: fallback",
            samples=state.samples,
            tally=tally(votes, rules.weighting),
            tokens=sum(s.tokens for s in state.samples),
            seconds=clock.now() - start,
        )

    async def _stop(self, state: _Problem, pending: set[asyncio.Task]) -> None:
        """Abort every live request, let samples wind down briefly, cancel the rest."""
        state.stopping = True
        if state.live:
            with contextlib.suppress(Exception):
                await self.engine.abort(list(state.live))
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.config.abort_grace)
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still, timeout=self.config.abort_grace)

    def _params(self, problem_id: str, index: int, turn: int, max_tokens: int, kind: str) -> GenParams:
        cfg = self.config
        spec = cfg.sampling[index % len(cfg.sampling)]
        stops = ["</think>"] if cfg.stop_after_reasoning else []
        if kind == "tir" and self.tir.name == "openmath":
            stops.append(self.tir.code_end)
        return GenParams(max_tokens=max_tokens, temperature=spec.temperature, top_p=spec.top_p,
                         min_p=spec.min_p, top_k=spec.top_k, seed=sample_seed(cfg.seed, problem_id, index, turn),
                         stop=tuple(stops), include_stop_str_in_output=True)

    async def _run_sample(self, state: _Problem, index: int, prompt: str, budget: int) -> SampleResult:
        sample = state.samples[index]
        engine = self.engine
        clock = engine.clock
        prompt_tokens = engine.count_tokens(prompt)
        appended_tokens = 0
        turn = 0
        try:
            while True:
                left = min(budget - sample.tokens,
                           engine.max_model_len - prompt_tokens - sample.tokens - appended_tokens)
                if left <= 0:
                    sample.finish_reason = "length" if budget - sample.tokens <= 0 else "context"
                    break
                if state.stopping:
                    sample.finish_reason = "abort"
                    break
                rid = f"{state.problem_id}:{index}:{turn}:{time.monotonic_ns()}"
                reason, new_text, used = await self._stream(state, rid, prompt + sample.text,
                                                             self._params(state.problem_id, index, turn, left, sample.kind),
                                                             sample)
                sample.text += new_text
                sample.tokens += used
                if reason == "code":
                    appended = await self._execute(state, sample, index)
                    appended_tokens += engine.count_tokens(appended)
                    turn += 1
                    continue
                sample.finish_reason = reason
                break
        except asyncio.CancelledError:
            sample.finish_reason = "cancelled"
            raise
        except Exception as exc:
            sample.finish_reason = "error"
            sample.error = f"{type(exc).__name__}: {exc}"
        finally:
            sample.finished = clock.now()
            sample.raw_answer = extract_answer(sample.text)
            sample.answer = self.profile.to_answer(sample.raw_answer)
        return sample

    async def _stream(self, state: _Problem, rid: str, prompt: str, params: GenParams,
                      sample: SampleResult) -> tuple[str, str, int]:
        """Run one request; returns (why it ended, its text, tokens used)."""
        cfg = self.config
        tir = sample.kind == "tir" and len(sample.code) < cfg.max_code_calls
        start_marker = self.tir.code_start.rstrip("\n") if self.tir.name == "qwen" else self.tir.code_start
        min_p, max_p = cfg.repetition_period
        text, tokens, finish = "", 0, "stop"
        checked = 0
        state.live.add(rid)
        stream = self.engine.generate(prompt, params, rid)
        cut: int | None = None
        reason: str | None = None
        try:
            async for chunk in stream:
                text, tokens = chunk.text, chunk.tokens
                if chunk.finished:
                    finish = chunk.finish_reason or "stop"
                    break
                if tir:
                    end = _code_block_end(text, start_marker, self.tir.code_end)
                    if end is not None:
                        cut, reason = end, "code"
                        break
                if cfg.stop_at_first_boxed and "boxed" in chunk.delta and has_complete_box(text):
                    reason = "stop"
                    break
                if cfg.repetition_repeats and len(text) - checked >= 64:
                    checked = len(text)
                    if is_looping(text, min_p, max_p, cfg.repetition_repeats):
                        reason = "repetition"
                        break
        finally:
            state.live.discard(rid)
            if reason is not None:
                with contextlib.suppress(Exception):
                    await self.engine.abort([rid])
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        if reason == "code" and cut is not None:
            return "code", text[:cut], tokens
        if reason is not None:
            return reason, text, tokens
        if tir and finish == "stop" and self.tir.name == "openmath" and text.endswith(self.tir.code_end):
            return "code", text, tokens
        return finish, text, tokens

    async def _execute(self, state: _Problem, sample: SampleResult, index: int) -> str:
        """Run the sample's last code block in its sandbox session; append and return the output block."""
        assert self.sandbox is not None
        code = extract_code(sample.text, self.tir) or ""
        session = f"{state.problem_id}:{index}"
        clock = self.engine.clock
        with clock.hold():
            result = await self.sandbox.arun(code, session=session, timeout=self.config.code_timeout)
        block = format_output(result, self.tir)
        if not sample.text.endswith("\n"):
            block = "\n" + block
        sample.text += block
        sample.code.append({"code": code, "status": result.status.value, "output": block,
                            "seconds": round(result.seconds, 4)})
        if result.status is Status.KILLED:
            sample.code[-1]["note"] = "sandbox process died"
        return block

    # --- records --------------------------------------------------------------------------------

    def _record_sample(self, state: _Problem, s: SampleResult) -> None:
        if self.recorder is None:
            return
        self.recorder.write("sample", problem_id=state.problem_id, **asdict(s))

    def _record_problem(self, result: ProblemResult, text: str, gold: int | None) -> None:
        """The problem event carries the (cleaned) problem text, so records alone are enough for
        evaluation and for training a scorer or difficulty predictor on them."""
        if self.sandbox is not None:
            for s in result.samples:
                with contextlib.suppress(Exception):
                    self.sandbox.close(f"{result.problem_id}:{s.index}")
        if self.recorder is None:
            return
        self.recorder.write(
            "problem", problem_id=result.problem_id, problem=text, answer=result.answer, gold=gold,
            correct=None if gold is None else result.answer == gold, reason=result.reason,
            tally={str(k): v for k, v in result.tally.items()}, tokens=result.tokens,
            seconds=round(result.seconds, 4), samples=len(result.samples),
            samples_finished=result.samples_finished, code_calls=result.code_calls, error=result.error,
        )
