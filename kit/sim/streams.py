"""One replayed request: its recording's tokens, vLLM's stop-string and length rules, and its stream slot.

:class:`ReplayRequest` plans the next decode steps of a request before the replay engine lets time pass
(:meth:`ReplayRequest.plan`), so a stop string, ``max_tokens`` or the recording's end are found exactly
at the token where vLLM would find them; :class:`TokenCursor` tokenises the recording lazily in windows.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from dataclasses import dataclass
from typing import Any

from kit.runtime.engines.base import Chunk, GenParams
from kit.runtime.tokens import ApproxTokenizer


class TokenCursor:
    """Token boundaries of one recording from some character position on, computed lazily in windows.

    Why windows: a request may stop after a few tokens (stop string, abort), so tokenizing a 160k-char
    recording up front would be wasted; and restarting the regex at a token boundary gives exactly the
    tokens a whole-text pass gives (its lookaheads are one character), so the last token of each window
    is dropped and re-read with the next window.
    """

    __slots__ = ("_ends", "_i", "_pos", "_tokenizer", "text")

    def __init__(self, text: str, start: int, tokenizer: ApproxTokenizer) -> None:
        self.text = text
        self._tokenizer = tokenizer
        self._pos = start
        """Characters before this position are tokenized."""
        self._ends: list[int] = []
        self._i = 0
        """Index in ``_ends`` of the next token not yet emitted."""

    def peek(self, n: int) -> list[int]:
        """End offsets of the next ``n`` tokens (fewer at the end of the text)."""
        while len(self._ends) - self._i < n and self._pos < len(self.text):
            self._read(max(4096, 8 * n))
        return self._ends[self._i : self._i + n]

    def advance(self, n: int) -> None:
        self._i += n
        if self._i > 4096:
            del self._ends[: self._i]
            self._i = 0

    def _read(self, window: int) -> None:
        text, pos = self.text, self._pos
        while True:
            end = min(pos + window, len(text))
            pieces = self._tokenizer.regex.findall(text, pos, end)
            if end == len(text):
                break
            if len(pieces) > 1:
                pieces.pop()
                break
            window *= 2
        ends = list(itertools.accumulate(map(len, pieces), initial=pos))[1:]
        self._ends.extend(ends)
        self._pos = ends[-1] if ends else end


@dataclass(frozen=True)
class Plan:
    """What a request would emit in the next steps (computed before time passes, applied after)."""

    tokens: int
    end: int
    """Recording position after the emitted text."""
    finish_reason: str | None = None
    stop_reason: str | None = None


class Slot:
    """One request's latest unconsumed chunk; chunks a slow consumer missed are merged (as vLLM does)."""

    __slots__ = ("chunk", "event")

    def __init__(self) -> None:
        self.chunk: Chunk | None = None
        self.event = asyncio.Event()

    def put(self, chunk: Chunk) -> None:
        if self.chunk is not None:
            chunk = Chunk(chunk.request_id, chunk.text, self.chunk.delta + chunk.delta, chunk.tokens,
                          chunk.finished, chunk.finish_reason, chunk.stop_reason)
        self.chunk = chunk
        self.event.set()

    async def get(self) -> Chunk:
        await self.event.wait()
        self.event.clear()
        chunk, self.chunk = self.chunk, None
        assert chunk is not None
        return chunk


class DecodeRequest:
    """What the coordinator needs of every request; a replay engine's request adds its recording and says
    what the next steps emit (:meth:`plan`)."""

    __slots__ = ("budget", "cursor", "finished", "id", "params", "prefill", "problem", "prompt", "prompt_tokens",
                 "sample", "slot", "start", "tokens")

    def __init__(self, request_id: str, prompt: Any, params: GenParams, problem: str, sample: int, start: int,
                 prompt_tokens: int, prefill: int, budget: int) -> None:
        self.id = request_id
        self.prompt = prompt
        self.params = params
        self.problem = problem
        self.sample = sample
        self.start = start
        self.cursor = start
        """Recording position after the tokens generated so far."""
        self.prompt_tokens = prompt_tokens
        self.prefill = prefill
        """Prompt tokens not in the prefix cache (charged at the next step)."""
        self.budget = budget
        self.tokens = 0
        self.finished = False
        self.slot = Slot()

    def plan(self, steps: int) -> Plan:
        """The next ``steps`` decode steps (fewer when the request finishes on the way)."""
        raise NotImplementedError


class ReplayRequest(DecodeRequest):
    """A request replaying a recorded text, tokenised lazily (:class:`TokenCursor`)."""

    __slots__ = ("emitted", "holdback", "toks")

    def __init__(self, request_id: str, prompt: str, params: GenParams, problem: str, sample: int,
                 recording: str, start: int, prompt_tokens: int, prefill: int, budget: int,
                 tokenizer: ApproxTokenizer) -> None:
        super().__init__(request_id, prompt, params, problem, sample, start, prompt_tokens, prefill, budget)
        self.emitted = start
        """Recording position after the text streamed so far."""
        self.holdback = 0 if params.include_stop_str_in_output else max(0, *(len(s) - 1 for s in params.stop))
        self.toks = TokenCursor(recording, start, tokenizer)

    @property
    def recording(self) -> str:
        return self.toks.text

    def plan(self, steps: int) -> Plan:
        """The next ``steps`` decode steps (fewer when the request finishes on the way)."""
        room = self.budget - self.tokens
        n = min(steps, room)
        ends = self.toks.peek(n)
        stop = self._find_stop(ends)
        if stop is not None:
            return stop
        if len(ends) < n:  # the recording ends: EOS is the next token
            end = ends[-1] if ends else self.cursor
            return Plan(len(ends) + 1, end, "stop", None)
        end = ends[-1] if ends else self.cursor
        if n == room:
            return Plan(n, end, "length")
        return Plan(n, end)

    def _find_stop(self, ends: list[int]) -> Plan | None:
        """vLLM's stop-string check, token by token: the first token completing any stop string."""
        if not ends or not self.params.stop:
            return None
        text, hi = self.recording, ends[-1]
        best: tuple[int, int, str, int] | None = None  # (token index, stop order, stop, match start)
        for order, stop in enumerate(self.params.stop):
            if not stop:
                continue
            lo = max(self.start, self.cursor - len(stop) + 1)
            at = text.find(stop, lo, hi)
            if at < 0:
                continue
            token = bisect.bisect_left(ends, at + len(stop))
            if best is None or (token, order) < best[:2]:
                best = (token, order, stop, at)
        if best is None:
            return None
        token, _, stop, at = best
        keep = at + len(stop) if self.params.include_stop_str_in_output else at
        return Plan(token + 1, keep, "stop", stop)
