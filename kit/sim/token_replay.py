"""Token replay: a real gpt-oss run's logged Harmony attempts played back by token ids, turn by turn, in
virtual time — so a whole AIMO3 session (time bank, attempts, early stop, entropy votes, records) runs on
real model output on a CPU in seconds (``python -m kit dryrun --stack gpt-oss --profile aimo3 --engine replay
--traces LOG --problems LOG``).

How a request is answered (the Harmony protocol sends token-id prompts):

* **Which problem**: the prompt ids are decoded and the logged problem text (stripped) found in them, the
  longest one when several occur; a prompt with none is a ``ValueError`` (a dry-run must not score a
  problem it has no attempts for).
* **Which attempt**: a fresh prompt (the first turn of an attempt) takes the problem's next logged attempt
  in order (round robin), so the 8 attempts of a problem are 8 different logged ones, whatever seeds the
  solver draws.
* **Continuations**: a prompt that extends the last context of one of its attempts (the prompt and what
  that attempt's previous turn produced) continues that attempt. What the solver appended — its own
  python tool message and ``<|start|>assistant`` — is lined up with the logged tool message at that point,
  and both are skipped (the model "reads" the kit's output and carries on as logged), as the text replay
  does with output blocks. Text appended that is no tool message is counted in ``stats.unaligned``.
* **Stops**: as vLLM — the first of ``GenParams.stop_token_ids`` (``<|call|>``, ``<|return|>``) ends the
  request with ``finish_reason="stop"`` and the id as ``stop_reason`` (kept in the ids); ``max_tokens`` or the
  context → ``"length"``; the log's end → ``"stop"`` with no stop reason (an attempt logged up to the box its
  harness stopped at: with ``stop_at_first_boxed`` the solver stops there first).
* **Confidence**: when the log has ``entropy_mean`` (and ``entropy_tail``) and the request asks for
  log-probabilities, each token streams a top-k row whose entropy makes the attempt's mean (and its last
  :data:`~kit.runtime.confidence.TAIL_TOKENS` tokens' mean) what the log recorded: the solver's entropy
  votes see the logged confidence.

Time is the shared :class:`kit.sim.decoder.VirtualDecoder`'s, on the config's speed model (default the
``h100-gpt-oss-120b`` one: ~107 tokens/s per attempt at 8 in flight, measured 110–123 on Kaggle).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kit.offline.attempt_logs import read_harmony_log
from kit.runtime.confidence import TAIL_TOKENS
from kit.runtime.engines.base import Chunk, Clock, EngineInfo, GenParams, Prompt
from kit.runtime.protocols.harmony import END, assistant_header_ids, decode_ids, harmony_encoding
from kit.runtime.throughput import SpeedModel, get_speed
from kit.sim.clock import VirtualClock
from kit.sim.decoder import VirtualDecoder
from kit.sim.streams import DecodeRequest, Plan

START = 200006
"""``<|start|>``: opens a message (a tool's answer, the model's next turn)."""


@dataclass(frozen=True)
class TokenReplayConfig:
    speed: SpeedModel = field(default_factory=lambda: get_speed("h100-gpt-oss-120b"))
    chunk_tokens: int = 16
    max_model_len: int = 131_072
    max_num_seqs: int = 256
    top_k: int = 5
    """Log-probabilities per streamed token (the AIMO3 notebooks' 5)."""
    name: str = "replay"

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1 or self.top_k < 2:
            raise ValueError(f"chunk_tokens must be >= 1 and top_k >= 2, got {self.chunk_tokens}, {self.top_k}")


@dataclass(frozen=True)
class TokenRecording:
    """One logged attempt: its completion ids and the confidence its harness recorded."""

    ids: np.ndarray
    entropy_mean: float | None = None
    entropy_tail: float | None = None


def entropy_row(bits: float, k: int = 5) -> tuple[float, ...]:
    """Top-``k`` log-probabilities (highest first) whose entropy ``−Σ p·log2 p`` is ``bits``: one likely
    token and ``k − 1`` equally likely others (clamped to ``[0, log2 k]``)."""
    bits = min(max(bits, 0.0), math.log2(k))

    def entropy(x: float) -> float:
        rest = (1 - x) / (k - 1)
        return -sum(p * math.log2(p) for p in (x, *[rest] * (k - 1)) if p > 0)

    lo, hi = 1.0 / k, 1.0  # entropy falls from log2 k to 0 as the top probability rises
    for _ in range(60):
        mid = (lo + hi) / 2
        if entropy(mid) > bits:
            lo = mid
        else:
            hi = mid
    x = (lo + hi) / 2
    rest = (1 - x) / (k - 1)
    return (math.log(x), *[math.log(rest) if rest > 0 else -1e4] * (k - 1))


class _Request(DecodeRequest):
    """A request replaying a logged attempt's completion ids."""

    __slots__ = ("ids", "rows", "stops", "text")

    def __init__(self, request_id: str, prompt: np.ndarray, params: GenParams, problem: str, sample: int,
                 ids: np.ndarray, start: int, prefill: int, budget: int,
                 rows: tuple[np.ndarray, tuple[float, ...], tuple[float, ...]] | None) -> None:
        super().__init__(request_id, prompt, params, problem, sample, start, len(prompt), prefill, budget)
        self.ids = ids
        """The logged attempt's completion ids."""
        self.stops = frozenset(params.stop_token_ids)
        self.rows = rows
        self.text = ""

    def plan(self, steps: int) -> Plan:
        room = self.budget - self.tokens
        n = min(steps, room)
        segment = self.ids[self.cursor : self.cursor + n]
        if self.stops:
            for i, token in enumerate(segment.tolist()):
                if token in self.stops:
                    return Plan(i + 1, self.cursor + i + 1, "stop", token)  # type: ignore[arg-type]
        if len(segment) < n:  # the log ends: EOS is the next token
            return Plan(len(segment) + 1, self.cursor + len(segment), "stop", None)
        if n == room:
            return Plan(n, self.cursor + n, "length")
        return Plan(n, self.cursor + n)


def _common(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


class TokenReplayEngine(VirtualDecoder):
    """Plays logged Harmony attempts as an :class:`~kit.runtime.engines.base.Engine` (see the module docstring)."""

    def __init__(self, recordings: dict[str, Sequence[TokenRecording]], config: TokenReplayConfig | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config or TokenReplayConfig()
        super().__init__(clock=clock or VirtualClock(), speed=self.config.speed, chunk_tokens=self.config.chunk_tokens)
        self.name = self.config.name
        self.max_model_len = self.config.max_model_len
        self.max_num_seqs = self.config.max_num_seqs
        self._recordings = {p.strip(): list(r) for p, r in recordings.items()}
        if not self._recordings or any(not p or not r for p, r in self._recordings.items()):
            raise ValueError("token replay: every logged problem needs a text and at least one attempt")
        self._by_length = sorted(self._recordings, key=len, reverse=True)
        self._enc = harmony_encoding()
        self._header = np.asarray(assistant_header_ids(), dtype=np.int32)
        self._problems: dict[bytes, str] = {}
        """Fresh prompts (as bytes) → their problem."""
        self._latest: dict[tuple[str, int], tuple[np.ndarray, int]] = {}
        """(problem, attempt) → the last request's prompt + output ids, and where it stopped in the log."""
        self._open: set[tuple[str, int]] = set()
        """Attempts whose last request no continuation has taken up yet: attempts whose turns were logged
        alike (the same call, the same output) are still continued one each."""
        self._next: dict[str, int] = {}
        self._row_cache: dict[tuple[str, int], tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]] = {}

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_log(cls, path: str | Path, config: TokenReplayConfig | None = None, clock: Clock | None = None,
                 *, columns: dict[str, str] | None = None) -> TokenReplayEngine:
        """A Harmony token log (:mod:`kit.offline.attempt_logs`): each problem's logged attempts, in order."""
        recordings: dict[str, list[TokenRecording]] = {}
        for a in read_harmony_log(path, columns=columns):
            if not a.problem.strip():
                raise ValueError(f"{path}: problem {a.problem_id} has no problem text to replay it by")
            assert a.ids is not None
            recordings.setdefault(a.problem.strip(), []).append(TokenRecording(a.ids, a.entropy_mean, a.entropy_tail))
        return cls(recordings, config, clock)

    # -- the engine interface ------------------------------------------------------------------------------

    @property
    def problems(self) -> list[str]:
        return list(self._recordings)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, model="logged gpt-oss attempts", backend="token replay",
                          max_model_len=self.max_model_len,
                          details={"problems": len(self._recordings), "speed": self.config.speed})

    def count_tokens(self, text: str) -> int:
        return len(self._enc.encode(text, allowed_special="all"))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        raise TypeError("a Harmony token log replays Harmony conversations (token-id prompts): run the gpt-oss "
                        "stack (--stack gpt-oss), not a chat-template one")

    def generate(self, prompt: Prompt, params: GenParams, request_id: str) -> AsyncIterator[Chunk]:
        if isinstance(prompt, str):
            raise TypeError("a Harmony token log replays token-id prompts (the harmony protocol), not text")
        return super().generate(prompt, params, request_id)

    # -- request set-up -----------------------------------------------------------------------------------

    def _problem_of(self, prompt: np.ndarray) -> str:
        key = prompt.tobytes()
        if key not in self._problems:
            text = self._enc.decode(prompt.tolist())
            found = next((p for p in self._by_length if p in text), None)
            if found is None:
                raise ValueError(f"token replay: no logged problem occurs in the prompt ({len(prompt)} tokens, "
                                 f"ending {text[-160:]!r}; {len(self._recordings)} problems logged)")
            self._problems[key] = found
        return self._problems[key]

    def _continued(self, prompt: np.ndarray) -> tuple[str, int, int] | None:
        """(problem, attempt, log position) when the prompt extends an attempt's last context."""
        best: tuple[int, str, int, int] | None = None
        for key in self._open:
            context, pos = self._latest[key]
            if len(context) <= len(prompt) and (best is None or (len(context), -key[1]) > (best[0], -best[2])) \
                    and _common(context, prompt) == len(context):
                best = (len(context), key[0], key[1], pos)
        if best is None:
            return None
        self._open.discard((best[1], best[2]))
        return best[1:]

    def _skip_tool_message(self, ids: np.ndarray, pos: int, appended: np.ndarray) -> tuple[int, bool]:
        """Where the log resumes after the kit appended ``appended`` (its tool message and the assistant
        header): the logged tool message(s) at ``pos`` and the header after them are skipped; whether the
        appended ids were a tool message at all."""
        tool_like = len(appended) >= 2 and appended[0] == START and appended[1] != self._header[1]
        j = pos
        while j + 1 < len(ids) and ids[j] == START and ids[j + 1] != self._header[1]:  # a logged tool message
            ends = np.flatnonzero(ids[j:] == END)
            j = len(ids) if len(ends) == 0 else j + int(ends[0]) + 1
        if j + 1 < len(ids) and ids[j] == self._header[0] and ids[j + 1] == self._header[1]:
            j += 2
        return j, tool_like

    def _start(self, prompt: Prompt, params: GenParams, request_id: str) -> _Request:  # type: ignore[override]
        self._check_new(request_id)
        ids = np.asarray(list(prompt), dtype=np.int32)
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit max_model_len {self.max_model_len}")
        found = self._continued(ids)
        if found is not None:
            problem, sample, pos = found
            context = self._latest[(problem, sample)][0]
            start, tool_like = self._skip_tool_message(self._recordings[problem][sample].ids, pos,
                                                       ids[len(context):])
            self.stats.continuations += 1
            self.stats.unaligned += not tool_like
            prefill = len(ids) - len(context)
        else:
            problem = self._problem_of(ids)
            sample = self._next.get(problem, 0) % len(self._recordings[problem])
            self._next[problem] = self._next.get(problem, 0) + 1
            start = 0
            shared = max((_common(c, ids) for (p, _), (c, _) in self._latest.items() if p == problem), default=0)
            prefill = len(ids) - shared
        rec = self._recordings[problem][sample]
        rows = None
        if params.logprobs and rec.entropy_mean is not None:
            if (problem, sample) not in self._row_cache:
                self._row_cache[(problem, sample)] = self._rows(rec)
            rows = self._row_cache[(problem, sample)]
        budget = min(params.max_tokens, self.max_model_len - len(ids))
        req = _Request(request_id, ids, params, problem, sample, rec.ids, start, max(prefill, 1), budget, rows)
        self._launch(req)
        return req

    def _rows(self, rec: TokenRecording) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
        """(which recording positions are in the tail, the row before the tail, the row in the tail): the rows
        make the model-written tokens' mean entropy the logged ``entropy_mean`` and, where the attempt is long
        enough for both, the last :data:`TAIL_TOKENS` tokens' mean the logged ``entropy_tail`` (the mean wins
        where they cannot both hold). Logged tool messages are not the model's: they carry no row."""
        k = self.config.top_k
        own = self._model_written(rec.ids)
        where = np.flatnonzero(own)
        n, t = len(where), min(TAIL_TOKENS, len(where))
        mean = rec.entropy_mean or 0.0
        tail = rec.entropy_tail if rec.entropy_tail is not None else mean
        top = math.log2(k)
        if n <= t:
            head = tail = mean
        else:
            head = min(max((mean * n - tail * t) / (n - t), 0.0), top)
            tail = min(max((mean * n - head * (n - t)) / t, 0.0), top)
        in_tail = np.zeros(len(rec.ids), dtype=bool)
        in_tail[where[n - t:]] = True
        return in_tail, entropy_row(head, k), entropy_row(tail, k)

    def _model_written(self, ids: np.ndarray) -> np.ndarray:
        """Positions the model wrote: all but the logged tool messages and the ``<|start|>assistant`` after each."""
        own = np.ones(len(ids), dtype=bool)
        starts = np.flatnonzero(ids[:-1] == START)
        for j in starts:
            if ids[j + 1] != self._header[1]:  # a tool message: through its <|end|> and the header after it
                ends = np.flatnonzero(ids[j:] == END)
                stop = len(ids) if len(ends) == 0 else j + int(ends[0]) + 1
                if stop + 1 < len(ids) and ids[stop] == self._header[0] and ids[stop + 1] == self._header[1]:
                    stop += 2
                own[j:stop] = False
        return own

    # -- emitting -------------------------------------------------------------------------------------------

    def _commit(self, req: _Request, plan: Plan) -> None:  # type: ignore[override]
        new = req.ids[req.cursor : plan.end].tolist()
        first = req.cursor
        req.cursor = plan.end
        self._count(req, plan.tokens)
        logprobs: tuple[tuple[float, ...], ...] = ()
        if req.rows is not None:
            in_tail, head, tail = req.rows
            logprobs = tuple(tail if in_tail[first + i] else head for i in range(len(new)))
        self._emit(req, new, logprobs, plan.finish_reason, plan.stop_reason)
        if plan.finish_reason is not None:
            self._finish(req, plan.finish_reason)

    def _emit(self, req: _Request, new: list[int], logprobs: tuple[tuple[float, ...], ...], finish_reason: str | None,
              stop_reason: int | None) -> None:
        delta = decode_ids(self._enc, new)
        req.text += delta
        req.slot.put(Chunk(req.id, req.text, delta, req.tokens, finish_reason is not None, finish_reason,
                           stop_reason, delta_ids=tuple(new), delta_logprobs=logprobs))  # type: ignore[arg-type]

    def _abort_request(self, req: _Request) -> None:  # type: ignore[override]
        self._emit(req, [], (), "abort", None)
        self._finish(req, "abort")

    def _finish(self, req: _Request, reason: str) -> None:
        self._finished(req, reason)
        done = req.ids[req.start : req.cursor]
        self._latest[(req.problem, req.sample)] = (np.concatenate([req.prompt, done]), req.cursor)
        self._open.add((req.problem, req.sample))
