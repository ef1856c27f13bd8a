"""What every conversation protocol provides to the solver: one sample's conversation, turn by turn.

The solver's sample loop is the same for every protocol — ask the conversation for the next request,
stream it, let the conversation judge the turn (a tool call, or the end), run a tool call in the sample's
sandbox session and hand the result back — so a protocol is one module: :mod:`kit.runtime.protocols.text`
(chat template, fenced code, output blocks) and :mod:`kit.runtime.protocols.harmony` (gpt-oss). Adding a
third means one :class:`Protocol` implementation registered in ``kit.runtime.protocols.PROTOCOLS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from typing import Protocol as TypingProtocol

from kit.runtime.engines.base import Chunk, Prompt
from kit.runtime.prompts import PromptTemplate
from kit.runtime.sandbox.pool import SandboxConfig
from kit.runtime.sandbox.result import RunResult

OffLoop = Callable[..., Awaitable[Any]]
"""``await off_loop(fn, *args)``: run blocking work (token counting) off the event loop."""


@dataclass(frozen=True)
class Request:
    """One generation request of a turn."""

    prompt: Prompt
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Cut:
    """Where the protocol ends a turn while it streams: at a tool call (run it, then continue) or at an
    answer (the attempt is finished: ``SolverConfig.stop_at_first_boxed``)."""

    kind: Literal["call", "answer"]
    at: int | None = None
    """For a call of a text protocol: where the call ends in the turn's text (the rest is dropped)."""


@dataclass(frozen=True)
class TurnEnd:
    """How a turn ended, as the protocol reads it."""

    kind: Literal["call", "done"]
    code: str = ""
    """The code of a tool call (``kind == "call"``)."""
    reason: str = "stop"
    """Why the sample ends (``kind == "done"``): the engine's finish reason, or ``error``."""
    error: str | None = None
    """For ``reason == "error"``: what was wrong (malformed output, unknown tool, no final answer)."""


class Conversation(TypingProtocol):
    """One sample's conversation."""

    context_tokens: int
    """Tokens the next request's prompt holds (the context window check)."""
    prompt_tokens: int
    """Tokens of the first prompt."""

    def request(self, calls_allowed: bool) -> Request: ...

    def watch(self, chunk: Chunk) -> Cut | None:
        """While streaming (every chunk that does not finish the request): whether the turn ends here — a
        tool call to run, or an answer that finishes the attempt — or None."""
        ...

    def end_turn(self, text: str, ids: Sequence[int], tokens: int, finish_reason: str, cut: Cut | None,
                 calls_allowed: bool) -> TurnEnd:
        """Take the turn's output (its text, token ids when the engine gives them, tokens generated) into
        the conversation and say what it was."""
        ...

    async def add_output(self, result: RunResult, off_loop: OffLoop) -> str:
        """Append a tool call's result; returns the text the model will read."""
        ...

    @property
    def transcript(self) -> str:
        """Everything after the prompt, as text (the sample's record)."""
        ...

    def raw_answer(self) -> str | None:
        """The final answer as written (before the profile makes it an integer), read the protocol's way;
        None when the attempt gave none."""
        ...


class Protocol(TypingProtocol):
    """A conversation protocol: opens one conversation per sample."""

    name: str
    max_calls: int
    """Tool calls one sample may make."""

    def tool_sandbox(self, config: SandboxConfig) -> SandboxConfig:
        """The sandbox settings this protocol's tool needs (its output conventions, its prelude)."""
        ...

    async def open(self, template: PromptTemplate, problem: str, answer_rule: str, engine: Any,
                   off_loop: OffLoop) -> Conversation: ...
