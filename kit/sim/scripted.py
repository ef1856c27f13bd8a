"""Scripted engine: token-id completions decided by a script, streamed behind the
:class:`~kit.runtime.engines.base.Engine` interface in virtual time.

Why: a random tiny model almost never calls a tool or writes a final answer, and recorded text cannot
drive a token protocol (Harmony renders its own token ids). The tool loop, the confidence bookkeeping
and every malformed case (a completion that does not parse, an unknown recipient, a call never closed, no
final message, endless analysis) must still be tested on the real runtime path, deterministically. A
script is a function from the request (its prompt token ids, sampling parameters, how many requests came
before) to a :class:`Completion`: the token ids the "model" writes, optionally their top-k
log-probabilities, optionally a unit it repeats forever afterwards.

The engine behaves like vLLM where the solver can tell: generation ends at the first of
``GenParams.stop_token_ids`` (kept in the output, ``finish_reason="stop"``, ``stop_reason`` the id), at
``max_tokens`` or the context window (``"length"``), at the end of a non-repeating completion (EOS:
``"stop"``, ``stop_reason=None``), or on abort (``"abort"``). Tokens stream ``chunk_tokens`` at a time,
each chunk taking ``chunk_tokens × step_seconds`` on the clock (a :class:`~kit.sim.clock.VirtualClock`
by default, so parallel requests finish in the order of their lengths and a test runs in milliseconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kit.runtime.engines.base import Chunk, Clock, EngineInfo, GenParams, Prompt
from kit.runtime.throughput import SpeedModel
from kit.sim.clock import VirtualClock

__all__ = ["Completion", "Script", "ScriptedEngine", "ScriptedRequest"]


@dataclass(frozen=True)
class ScriptedRequest:
    """What the script sees of a request."""

    request_id: str
    prompt: tuple[int, ...]
    params: GenParams
    number: int
    """Requests the engine received before this one."""


@dataclass(frozen=True)
class Completion:
    """What the scripted model writes for one request."""

    ids: tuple[int, ...]
    logprobs: tuple[tuple[float, ...], ...] | None = None
    """Top-k log-probabilities per token of ``ids`` (the same k for all); None: the engine streams none."""
    repeat: tuple[int, ...] = ()
    """Written over and over after ``ids`` until a stop token, max tokens or an abort (endless analysis)."""

    def __post_init__(self) -> None:
        if self.logprobs is not None and len(self.logprobs) != len(self.ids):
            raise ValueError(f"{len(self.logprobs)} logprob rows for {len(self.ids)} tokens")

    def token(self, i: int) -> int | None:
        """The ``i``-th token written, None after the end of a non-repeating completion."""
        if i < len(self.ids):
            return self.ids[i]
        if not self.repeat:
            return None
        return self.repeat[(i - len(self.ids)) % len(self.repeat)]

    def top(self, i: int) -> tuple[float, ...]:
        if self.logprobs is None:
            return ()
        return self.logprobs[i] if i < len(self.logprobs) else self.logprobs[-1] if self.logprobs else ()


Script = Callable[[ScriptedRequest], Completion]


@dataclass
class ScriptedEngine:
    """An :class:`~kit.runtime.engines.base.Engine` whose model is a script (see the module docstring).

    ``decode`` turns token ids into the streamed text (e.g. the Harmony encoding's ``decode``); the
    default writes ``<id>`` per token. Text prompts are accepted too and are seen by the script as empty
    token tuples (``count_tokens`` is a 4-characters-per-token estimate)."""

    script: Script
    decode: Callable[[Sequence[int]], str] = field(default=lambda ids: "".join(f"<{i}>" for i in ids))
    step_seconds: float = 0.01
    chunk_tokens: int = 4
    max_model_len: int = 65_536
    max_num_seqs: int = 64
    clock: Clock = field(default_factory=VirtualClock)
    speed: SpeedModel = field(default_factory=lambda: SpeedModel(step_s=0.01))
    name: str = "scripted"
    requests: list[ScriptedRequest] = field(default_factory=list)
    """Every request received, in order (what tests inspect)."""
    _aborted: set[str] = field(default_factory=set)
    _live: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1 or self.step_seconds < 0:
            raise ValueError("chunk_tokens must be >= 1 and step_seconds >= 0")

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, model="script", backend="scripted", max_model_len=self.max_model_len)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages) + "<|assistant|>"

    def generate(self, prompt: Prompt, params: GenParams, request_id: str) -> AsyncIterator[Chunk]:
        if request_id in self._live:
            raise ValueError(f"request id {request_id!r} is already running")
        ids = () if isinstance(prompt, str) else tuple(prompt)
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit max_model_len {self.max_model_len}")
        request = ScriptedRequest(request_id, ids, params, len(self.requests))
        self.requests.append(request)
        self._live.add(request_id)
        self._aborted.discard(request_id)
        return self._stream(request, self.script(request))

    async def _stream(self, request: ScriptedRequest, completion: Completion) -> AsyncIterator[Chunk]:
        params, rid = request.params, request.request_id
        limit = min(params.max_tokens, self.max_model_len - len(request.prompt))
        stops = set(params.stop_token_ids)
        written: list[int] = []
        try:
            while True:
                await self.clock.sleep(self.chunk_tokens * self.step_seconds)
                if rid in self._aborted:
                    yield self._chunk(rid, written, (), (), "abort", None)
                    return
                new: list[int] = []
                tops: list[tuple[float, ...]] = []
                reason: str | None = None
                stop_id: int | None = None
                for _ in range(self.chunk_tokens):
                    token = completion.token(len(written))
                    if token is None:
                        reason = "stop"
                        break
                    tops.append(completion.top(len(written)))
                    written.append(token)
                    new.append(token)
                    if token in stops:
                        reason, stop_id = "stop", token
                        break
                    if len(written) >= limit:
                        reason = "length"
                        break
                yield self._chunk(rid, written, new, tops if params.logprobs else (), reason, stop_id)
                if reason is not None:
                    return
        finally:
            self._live.discard(rid)
            self._aborted.discard(rid)

    def _chunk(self, rid: str, written: list[int], new: Sequence[int], tops: Sequence[tuple[float, ...]],
               reason: str | None, stop_id: int | None) -> Chunk:
        before = self._text(written[: len(written) - len(new)])
        text = self._text(written)
        return Chunk(request_id=rid, text=text, delta=text[len(before):], tokens=len(written), finished=reason is not None,
                     finish_reason=reason, stop_reason=stop_id, delta_ids=tuple(new),
                     delta_logprobs=tuple(t for t in tops if t))

    def _text(self, ids: Sequence[int]) -> str:
        try:
            return self.decode(list(ids))
        except Exception:  # a script may write ids the decoder cannot join (cut UTF-8, unknown ids)
            return "".join(f"<{i}>" for i in ids)

    async def abort(self, request_ids: Iterable[str]) -> None:
        self._aborted.update(r for r in request_ids if r in self._live)
        await asyncio.sleep(0)

    @property
    def active_requests(self) -> list[str]:
        return list(self._live)

    async def close(self) -> None:
        await self.abort(list(self._live))
