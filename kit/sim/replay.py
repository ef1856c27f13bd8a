"""Replay engine: recorded completions played token by token behind the :class:`~kit.runtime.engines.base.Engine`
interface, in virtual time.

Why: the solver, the voting/early-stop rules and the time scheduler must be tested on *real* model text
(boxed answers, code blocks, ramblings, truncations) and on realistic timing, deterministically, and a
whole 5-hour competition must be re-playable in seconds. Recorded samples give the text; a
:class:`SpeedModel` gives the time; a :class:`VirtualClock` lets that time pass instantly.

How a request is answered
-------------------------
* **Which problem**: the recorded problem text (stripped) that occurs in the prompt; the longest one
  when several occur. Prompts seen before are remembered, so a continuation (a prompt that extends an
  earlier one) is matched by a prefix test instead of a search. A prompt with no recorded problem raises
  ``ValueError`` from ``generate`` (``ReplayConfig.on_unknown="error"``, the default: a dry-run must not
  silently score a problem it has no text for) or, with ``on_unknown="empty"``, gets an empty
  completion (EOS at once), as if the model had produced nothing.
* **Which sample**: ``GenParams.seed % n_samples``; with ``seed=None`` a per-problem counter hands out
  samples 0, 1, 2, ... in request order. Other sampling parameters (temperature, top_p, ...) are
  ignored: the text is what was recorded.
* **Continuations (tool-integrated reasoning)**: a prompt that extends an earlier fresh prompt (the
  *base*) continues a sample. Its text after the base — recorded text of earlier turns, possibly cut
  anywhere, with whatever the solver appended between turns — is lined up with each recording of the
  problem: equal text is consumed as if generated; where it differs inside or just before a recorded
  ```` ```output ```` block (the solver appended its *own* output), both output blocks are skipped;
  other appended text is ignored (the model "reads" it and carries on as recorded; counted in
  ``stats.unaligned``). The sample matching the most recorded text is continued from where the
  alignment ends, so a solver may change the seed between turns or cut the streamed text at a code
  block's end. Ties (recordings equal so far) go to the seed's sample, then to the sample whose last
  request the prompt shares most text with. A prompt whose added text matches no recording is a fresh
  request (an assistant prefill the model never wrote: the sample replays from its start).
* **Stop strings, max_tokens, EOS**: as vLLM does it — the stop strings are searched in this request's
  generated text after each token; a match ends the request with ``finish_reason="stop"``,
  ``stop_reason`` = the string, the text cut at the match (keeping the stop string iff
  ``include_stop_str_in_output``); ``max_tokens`` (or ``max_model_len``) reached → ``"length"`` (a stop
  string completed by the same token wins, as in vLLM v1); the end of the recording is an EOS token
  (counted, no text) → ``"stop"`` with ``stop_reason=None``.

Time
----
Requests decode together in virtual time on the config's :class:`SpeedModel`, chunk by chunk, exact per
token (:class:`kit.sim.decoder.VirtualDecoder`, shared with the token replay of Harmony logs). Work outside
the engine (sandbox code) should run inside ``clock.hold()``: it then takes zero virtual time (never await
the engine or ``clock.sleep`` while holding: that deadlocks). Real-time waits not under ``hold()`` look like
idleness to the virtual clock. One engine per virtual clock; one event loop at a time. ``realtime=True``
paces steps with real ``asyncio.sleep`` (divided by ``speedup``) on a
:class:`~kit.runtime.engines.base.RealClock`, for demos.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kit.offline.attempt_logs import is_attempt_log
from kit.offline.runs import load_records_run
from kit.offline.traces import RecordedSample, load_pool
from kit.runtime.engines.base import Chunk, Clock, EngineInfo, GenParams, Prompt, RealClock
from kit.runtime.engines.presets import get_preset
from kit.runtime.run_config import ResolvedConfig
from kit.runtime.throughput import SpeedModel, get_speed
from kit.runtime.tokens import ApproxTokenizer
from kit.sim.alignment import align, common_prefix
from kit.sim.clock import VirtualClock
from kit.sim.decoder import ReplayStats, VirtualDecoder
from kit.sim.streams import Plan, ReplayRequest
from kit.sim.token_replay import TokenReplayConfig, TokenReplayEngine

log = logging.getLogger(__name__)

__all__ = ["ReplayConfig", "ReplayEngine", "ReplayStats", "SpeedModel", "VirtualClock", "engine_factory"]

# ----------------------------------------------------------------------------------------------------
# Configuration and accounting


@dataclass(frozen=True)
class ReplayConfig:
    speed: SpeedModel = field(default_factory=SpeedModel.l4x4_7b_awq)
    chunk_tokens: int = 16
    """Decode steps per coordinator iteration (per streamed chunk). Larger is faster in real time; virtual
    time is the same (chunks end where a request finishes)."""
    max_model_len: int = 131072
    max_num_seqs: int = 256
    """Requests decoded at once as far as a time bank is concerned (the replay itself never queues)."""
    tokenizer: ApproxTokenizer = field(default_factory=ApproxTokenizer)
    generation_prompt: str = "<|im_start|>assistant\n<think>\n"
    """Appended by :meth:`ReplayEngine.chat_prompt` (R1-distill/Qwen3 style: the thought is opened)."""
    output_start: str = "```output"
    output_end: str = "```"
    """A recorded tool-output block, skipped when the solver appends its own output instead."""
    output_gap: str = r"\s*(?:```)?\s*"
    """Recorded text allowed between a continuation point and the output block to skip (a code fence
    the solver left out with ``include_stop_str_in_output=False``, newlines)."""
    on_unknown: Literal["error", "empty"] = "error"
    realtime: bool = False
    speedup: float = 1.0
    """Real-time mode only: how much faster than the speed model to run."""
    name: str = "replay"

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {self.chunk_tokens}")
        if self.speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {self.speedup}")
        if self.on_unknown not in ("error", "empty"):
            raise ValueError(f"on_unknown must be 'error' or 'empty', got {self.on_unknown!r}")


@dataclass(frozen=True)
class _Context:
    """A text the engine has processed (a prompt, or a finished request's prompt + text) and its token
    count: what the prefix cache holds, and a shortcut for counting the tokens of a longer prompt."""

    text: str
    tokens: int



def _snippet(prompt: str) -> str:
    if len(prompt) <= 200:
        return repr(prompt)
    return f"{prompt[:60]!r} … {prompt[-120:]!r}"


# ----------------------------------------------------------------------------------------------------
# The engine


class ReplayEngine(VirtualDecoder):
    """Plays recorded completions as an :class:`~kit.runtime.engines.base.Engine` (see the module docstring)."""

    def __init__(self, recordings: Mapping[str, Sequence[str]], config: ReplayConfig | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config or ReplayConfig()
        if clock is None:
            clock = RealClock() if self.config.realtime else VirtualClock()
        super().__init__(clock=clock, speed=self.config.speed, chunk_tokens=self.config.chunk_tokens,
                         speedup=self.config.speedup)
        self.name = self.config.name
        self.max_model_len = self.config.max_model_len
        self.max_num_seqs = self.config.max_num_seqs
        self._recordings: dict[str, list[str]] = {}
        for problem, texts in recordings.items():
            key = problem.strip()
            if not key:
                raise ValueError("replay: a recording has an empty problem text")
            if isinstance(texts, str):
                raise TypeError(f"replay: recordings of {key[:40]!r} must be a list of texts, not a str")
            self._recordings.setdefault(key, []).extend(texts)
            if not self._recordings[key]:
                raise ValueError(f"replay: problem {key[:40]!r} has no recorded completions")
        self._by_length = sorted(self._recordings, key=len, reverse=True)
        self._bases: dict[str, tuple[str, int]] = {}
        """Prompts of fresh requests → (problem, tokens); continuations start with one of them."""
        self._latest: dict[tuple[str, int], _Context] = {}
        """(problem, sample) → the last finished request's prompt + text: prefix cache, token counts."""
        self._counters: dict[str, int] = {}
        self._gap = re.compile(self.config.output_gap)

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_samples(cls, samples: Iterable[RecordedSample], config: ReplayConfig | None = None,
                     clock: Clock | None = None) -> ReplayEngine:
        """Group recorded samples by problem text, in their order."""
        recordings: dict[str, list[str]] = {}
        for s in samples:
            recordings.setdefault(s.problem.strip(), []).append(s.text)
        return cls(recordings, config, clock)

    @classmethod
    def from_pool(cls, pool: str | Path, config: ReplayConfig | None = None,
                  clock: Clock | None = None) -> ReplayEngine:
        """A bundled trace pool name (``kit.offline.traces.BUNDLED_POOLS``), folder or file."""
        return cls.from_samples(load_pool(pool), config, clock)

    @classmethod
    def from_records(cls, path: str | Path, config: ReplayConfig | None = None,
                     clock: Clock | None = None) -> ReplayEngine:
        """Our own run records (``records.jsonl``, read by :func:`kit.offline.runs.load_records_run`): each
        problem's finished samples are its recordings, so a run can be replayed with other settings."""
        recordings: dict[str, list[str]] = {}
        for p in load_records_run(path).problems:
            if p.problem.strip() and p.done:
                recordings.setdefault(p.problem.strip(), []).extend(s.text for s in p.done)
        if not recordings:
            raise ValueError(f"{path}: no problem with a recorded text and a finished sample to replay")
        return cls(recordings, config, clock)

    @classmethod
    def from_source(cls, source: str | Path, config: ReplayConfig | None = None,
                    clock: Clock | None = None) -> ReplayEngine:
        """A run's ``records.jsonl`` (a file named ``records*.jsonl``), else a trace pool (bundled name,
        folder or file)."""
        path = Path(source)
        if path.is_file() and path.name.startswith("records") and path.suffix == ".jsonl":
            return cls.from_records(path, config, clock)
        return cls.from_pool(source, config, clock)

    # -- Engine interface -----------------------------------------------------------------------------

    @property
    def problems(self) -> list[str]:
        """Recorded problem texts (stripped)."""
        return list(self._recordings)

    def has_problem(self, prompt: str) -> bool:
        """Whether some recorded problem occurs in ``prompt``."""
        return self._find_problem(prompt) is not None

    def count_tokens(self, text: str) -> int:
        return self.config.tokenizer.count(text)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """ChatML, ending with ``config.generation_prompt``."""
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + self.config.generation_prompt

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, model="recorded", backend="replay",
                          max_model_len=self.max_model_len,
                          details={"problems": len(self._recordings), "realtime": self.config.realtime,
                                   "speed": self.config.speed, "chunk_tokens": self.config.chunk_tokens})

    def generate(self, prompt: Prompt, params: GenParams, request_id: str) -> AsyncIterator[Chunk]:
        if not isinstance(prompt, str):
            raise TypeError("replay plays text recordings: a token-id prompt needs a token engine "
                            "(kit.sim.token_replay.TokenReplayEngine for Harmony logs, kit.sim.scripted."
                            "ScriptedEngine, or vLLM)")
        return super().generate(prompt, params, request_id)

    # -- request set-up -------------------------------------------------------------------------------

    def _find_base(self, prompt: str) -> tuple[str, str] | None:
        """(base prompt, problem): the longest earlier fresh prompt that starts ``prompt``, else ``prompt``
        itself when a recorded problem occurs in it."""
        best: str | None = None
        for base in self._bases:
            if len(base) <= len(prompt) and prompt.startswith(base) and (best is None or len(base) > len(best)):
                best = base
        if best is not None:
            return best, self._bases[best][0]
        problem = next((p for p in self._by_length if p in prompt), None)
        return None if problem is None else (prompt, problem)

    def _find_problem(self, prompt: str) -> str | None:
        found = self._find_base(prompt)
        return None if found is None else found[1]

    def _start(self, prompt: str, params: GenParams, request_id: str) -> ReplayRequest:  # type: ignore[override]
        self._check_new(request_id)
        found = self._find_base(prompt)
        if found is None:
            if self.config.on_unknown == "error":
                raise ValueError(f"replay: no recorded problem occurs in the prompt {_snippet(prompt)} "
                                 f"({len(self._recordings)} problems recorded)")
            recording, sample, start, problem = "", 0, 0, ""
        else:
            base, problem = found
            sample, start = self._locate(problem, base, prompt, params)
            recording = self._recordings[problem][sample]
        prompt_tokens, prefill = self._prompt_tokens(problem, prompt, sample)
        if prompt_tokens >= self.max_model_len:
            raise ValueError(f"prompt of {prompt_tokens} tokens does not fit max_model_len "
                             f"{self.max_model_len}")
        if problem and (prompt not in self._bases) and start == 0:
            self._bases[prompt] = (problem, prompt_tokens)
        budget = min(params.max_tokens, self.max_model_len - prompt_tokens)
        req = ReplayRequest(request_id, prompt, params, problem, sample, recording, start, prompt_tokens,
                       prefill, budget, self.config.tokenizer)
        self._launch(req)
        return req

    def _locate(self, problem: str, base: str, prompt: str, params: GenParams) -> tuple[int, int]:
        """(sample, start position in its recording) for a request.

        The text after the base prompt is lined up with every sample's recording; the one it matches
        longest is continued (ties: the seed's sample, then the sample whose last request's text the
        prompt shares most of, then the lowest index). Nothing matched: a new sample, from the seed.
        """
        texts = self._recordings[problem]
        wanted = None if params.seed is None else params.seed % len(texts)
        generated = prompt[len(base):]
        if generated:
            cfg = self.config
            aligned = [align(t, generated, cfg.output_start, cfg.output_end, self._gap) for t in texts]
            most = max(a.matched for a in aligned)
            if most > 0:
                tied = [k for k, a in enumerate(aligned) if a.matched == most]
                if len(tied) > 1:
                    def rank(k: int) -> tuple[bool, int, int]:
                        last = self._latest.get((problem, k))
                        shared = 0 if last is None else common_prefix(prompt, 0, last.text, 0)
                        return (k != wanted, -shared, k)
                    tied.sort(key=rank)
                chosen = aligned[tied[0]]
                self.stats.continuations += 1
                self.stats.unaligned += chosen.unaligned
                return tied[0], chosen.resume
        if wanted is None:
            wanted = self._counters.get(problem, 0) % len(texts)
            self._counters[problem] = self._counters.get(problem, 0) + 1
        return wanted, 0

    def _prompt_tokens(self, problem: str, prompt: str, sample: int) -> tuple[int, int]:
        """(tokens of ``prompt``, tokens not in the prefix cache), counting only what differs from the
        closest text processed before (a continuation prompt repeats all earlier turns)."""
        count = self.config.tokenizer.count
        best: _Context | None = None
        shared = 0
        candidates = [_Context(b, t) for b, (p, t) in self._bases.items() if p == problem]
        last = self._latest.get((problem, sample))
        if last is not None:
            candidates.append(last)
        for ctx in candidates:
            n = common_prefix(prompt, 0, ctx.text, 0)
            if n > shared:
                best, shared = ctx, n
        new = count(prompt[shared:])
        if best is None:
            return new, new
        if len(best.text) - shared > len(prompt):  # counting what differs would cost more
            return count(prompt), new
        return max(1, best.tokens - count(best.text[shared:]) + new), new

    # -- emitting ---------------------------------------------------------------------------------------

    def _commit(self, req: ReplayRequest, plan: Plan) -> None:  # type: ignore[override]
        text_tokens = plan.tokens - (plan.finish_reason == "stop" and plan.stop_reason is None)
        req.toks.advance(text_tokens)
        req.cursor = plan.end
        self._count(req, plan.tokens)
        self._emit(req, plan.finish_reason, plan.stop_reason)
        if plan.finish_reason is not None:
            self._finish(req, plan.finish_reason)

    def _emit(self, req: ReplayRequest, finish_reason: str | None, stop_reason: str | None) -> None:
        """Stream the text up to the cursor, less (while running) the last ``len(stop) - 1`` characters
        when stop strings are cut from the output: they may begin a stop string, and vLLM holds them
        back so that streamed text never has to be taken back."""
        visible = req.cursor
        if finish_reason is None:
            visible = max(req.emitted, visible - req.holdback)
        delta = req.recording[req.emitted : visible]
        req.emitted = visible
        req.slot.put(Chunk(req.id, req.recording[req.start : visible], delta, req.tokens,
                           finish_reason is not None, finish_reason, stop_reason))

    def _abort_request(self, req: ReplayRequest) -> None:  # type: ignore[override]
        self._emit(req, "abort", None)
        self._finish(req, "abort")

    def _finish(self, req: ReplayRequest, reason: str) -> None:
        self._finished(req, reason)
        if req.problem:
            text = req.recording[req.start : req.emitted]
            context = _Context(req.prompt + text, req.prompt_tokens + req.tokens)
            self._latest[(req.problem, req.sample)] = context


def engine_factory(resolved: ResolvedConfig) -> Callable[[], VirtualDecoder]:
    """The replay engine a run asks for (``engine: replay``), for
    :class:`kit.runtime.session.Session` and ``build_predict`` (the runtime layer never imports replay):
    a Harmony token log (``traces`` with ``completion_ids``) is played by ids
    (:class:`kit.sim.token_replay.TokenReplayEngine`, at the engine preset's speed and sequence limit, and
    only by the Harmony protocol); anything else by text (:class:`ReplayEngine`)."""
    config = resolved.config
    if config.engine != "replay":
        raise ValueError(f"engine_factory is for engine 'replay', the config asks for {config.engine!r}")
    traces = config.traces
    if is_attempt_log(traces):
        if Path(traces).suffix in (".csv", ".parquet"):
            raise ValueError(f"--traces {traces}: an attempt table keeps no text or ids to replay; replay a Harmony "
                             "token log, or simulate the table (python -m kit simulate --pool TABLE)")
        protocol = resolved.solver.protocol
        if protocol != "harmony":
            raise ValueError(f"--traces {traces} is a Harmony token log: replay it with the gpt-oss stack (--stack "
                             f"gpt-oss), not the {protocol!r} protocol")
        preset = get_preset(resolved.preset)
        token_config = TokenReplayConfig(speed=get_speed(resolved.speed or preset.speed),
                                         max_num_seqs=preset.max_num_seqs, name=f"replay:{traces}")
        return lambda: TokenReplayEngine.from_log(traces, token_config)
    return lambda: ReplayEngine.from_source(traces, ReplayConfig(name=f"replay:{traces}"))
