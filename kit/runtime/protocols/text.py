"""The text protocol: a chat-template prompt, the model's text continued turn by turn, tool-integrated
reasoning in fenced code blocks (R1-style models, the AIMO2 stack).

A sample's prompt is the engine's chat template over the prompt template's messages; each request is that
prompt plus everything generated and appended so far. A TIR sample's code block is found in the stream by
its :class:`~kit.runtime.protocols.tir.TIRFormat`, cut there, run, and the output block appended.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kit.runtime.answers import extract_answer, has_complete_box
from kit.runtime.engines.base import Chunk
from kit.runtime.prompts import PromptTemplate
from kit.runtime.protocols.base import Cut, OffLoop, Request, TurnEnd
from kit.runtime.protocols.tir import TIRFormat, get_format
from kit.runtime.sandbox.pool import SandboxConfig
from kit.runtime.sandbox.result import RunResult


class TextConversation:
    """One sample: the prompt text and the text generated and appended since."""

    def __init__(self, prompt: str, prompt_tokens: int, *, tir: TIRFormat | None, stop: tuple[str, ...],
                 count: Callable[[str], int], stop_at_box: bool = False) -> None:
        self.prompt = prompt
        self.prompt_tokens = prompt_tokens
        self.context_tokens = prompt_tokens
        self.tir = tir
        self.stop = stop
        self.stop_at_box = stop_at_box
        self._count = count
        self._text = ""

    def request(self, calls_allowed: bool) -> Request:
        stops = self.stop + (self.tir.stop if self.tir is not None and calls_allowed else ())
        return Request(self.prompt + self._text, stops)

    def watch(self, chunk: Chunk) -> Cut | None:
        text, delta = chunk.text, chunk.delta
        tir = self.tir
        if tir is not None and tir.code_end in text[-(len(delta) + len(tir.code_end)):]:
            at = tir.call_end(text)
            if at is not None:
                return Cut("call", at)
        if self.stop_at_box and "}" in delta and has_complete_box(text):
            return Cut("answer")
        return None

    def end_turn(self, text: str, ids: Sequence[int], tokens: int, finish_reason: str, cut: Cut | None,
                 calls_allowed: bool) -> TurnEnd:
        call = cut is not None and cut.kind == "call"
        if call:
            text = text[: cut.at]  # type: ignore[union-attr]
        self._text += text
        self.context_tokens += tokens
        if self.tir is not None and calls_allowed and (call or (
                finish_reason == "stop" and self.tir.ends_with_call(text))):
            return TurnEnd("call", code=self.tir.code(self._text) or "")
        return TurnEnd("done", reason=finish_reason)

    async def add_output(self, result: RunResult, off_loop: OffLoop) -> str:
        assert self.tir is not None
        block = self.tir.render(result)
        if not self._text.endswith("\n"):
            block = "\n" + block
        self._text += block
        self.context_tokens += await off_loop(self._count, block)
        return block

    @property
    def transcript(self) -> str:
        return self._text

    def raw_answer(self) -> str | None:
        return extract_answer(self._text)


@dataclass
class TextProtocol:
    """Chat template + fenced code (``tir`` a :class:`TIRFormat`); ``stop`` e.g. ``("</think>",)``."""

    tir: TIRFormat
    stop: tuple[str, ...] = ()
    max_calls: int = 4
    """Code blocks run per sample (``SolverConfig.max_code_calls``; 4 when it is None)."""
    stop_at_box: bool = False
    """End a sample at its first complete ``\\boxed{}`` (``SolverConfig.stop_at_first_boxed``)."""
    name: str = "text"
    _engine: Any = field(default=None, repr=False)
    """The engine whose tokenizer ``_prompt_tokens`` counts with (its cache is cleared when it changes)."""

    def __post_init__(self) -> None:
        # the samples of a template share one first prompt: count it once (least recently used kept)
        self._prompt_tokens = functools.lru_cache(maxsize=32)(self._count)

    def _count(self, prompt: str) -> int:
        return self._engine.count_tokens(prompt)

    @classmethod
    def from_config(cls, config: Any) -> TextProtocol:
        """``config.tir_format``'s code blocks; samples stop at ``</think>`` when ``stop_after_reasoning``."""
        calls = config.max_code_calls if config.max_code_calls is not None else cls.max_calls
        return cls(get_format(config.tir_format), ("</think>",) if config.stop_after_reasoning else (),
                   max_calls=calls, stop_at_box=config.stop_at_first_boxed)

    def tool_sandbox(self, config: SandboxConfig) -> SandboxConfig:
        return config

    async def open(self, template: PromptTemplate, problem: str, answer_rule: str, engine: Any,
                   off_loop: OffLoop) -> TextConversation:
        prompt = engine.chat_prompt(template.messages(problem, answer_rule))
        if engine is not self._engine:
            self._engine = engine
            self._prompt_tokens.cache_clear()
        return TextConversation(prompt, await off_loop(self._prompt_tokens, prompt),
                                tir=self.tir if template.kind == "tir" else None, stop=self.stop,
                                count=engine.count_tokens, stop_at_box=self.stop_at_box)
