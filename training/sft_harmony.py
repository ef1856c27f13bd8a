"""SFT data in Harmony form for gpt-oss models: conversations with analysis, python calls, tool outputs and a
final answer, rendered to token ids by openai-harmony with the loss on the assistant's own tokens only.

Why not a chat template: gpt-oss is prompted and parsed with Harmony (docs/design.md "AIMO3"), and a
tool-integrated trajectory has several assistant messages (analysis, a call to ``python``, more analysis
after the tool's answer, the final channel) between tool messages the model never writes. So each row is
rendered the way :class:`~kit.runtime.protocols.harmony.HarmonyProtocol` prompts and the model continues:
the system message (reasoning effort, the python tool declared), the user's problem, then every message in
order; a call ends in ``<|call|>``, the last final message in ``<|return|>`` (``completion_ids``). The mask
holds exactly what the model generates at inference: every assistant token except the ``<|start|>assistant``
header the runtime writes after the prompt and after each tool message. The audit checks that, on every
example, and shows one example with its trained spans marked.

A row: ``{"problem_id": ..., "messages": [{"role": "user", "content": ...}, {"role": "assistant",
"channel": "analysis", "content": ...}, {"role": "assistant", "channel": "analysis", "recipient":
"python", "content": "<code>"}, {"role": "tool", "name": "python", "content": "<output>"}, …,
{"role": "assistant", "channel": "final", "content": "… \\\\boxed{42}"}]}`` (an optional leading
``developer`` message is kept; ``system`` comes from :class:`SftConfig.harmony <training.sft.SftConfig>`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kit.learn.data import DataError
from kit.runtime.protocols.harmony import (
    CALL,
    PYTHON,
    RETURN,
    HarmonyProtocol,
    HarmonySettings,
    assistant_header_ids,
    completion_ids,
    harmony_encoding,
    tool_message,
)
from training.common import read_jsonl_numbered
from training.sft_audit import Audit, AuditError, ExampleStats, conclude_audit, echo_audit, render_mask

CHANNELS = ("analysis", "commentary", "final")
ROLES = ("developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class HarmonyExample:
    problem_id: str
    line: int
    messages: list[dict[str, str]]


def _check_row(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{at} must be an object with string 'role' and 'content'")
        role = m["role"]
        if role not in ROLES:
            raise DataError(f"{at}.role {role!r} is not one of {list(ROLES)} (the system message comes from the "
                            "config's harmony settings)")
        if role == "assistant" and m.get("channel") not in CHANNELS:
            raise DataError(f"{at}.channel must be one of {list(CHANNELS)}, got {m.get('channel')!r}")
        if role == "assistant" and m.get("recipient") not in (None, PYTHON):
            raise DataError(f"{at}.recipient {m.get('recipient')!r}: the only tool is {PYTHON!r}")
        if role == "tool" and m.get("name", PYTHON) != PYTHON:
            raise DataError(f"{at}.name {m.get('name')!r}: tool messages come from {PYTHON!r}")
        if role == "tool" and (i == 0 or messages[i - 1].get("recipient") != PYTHON):
            raise DataError(f"{at}: a tool message must follow an assistant message to {PYTHON!r}")
    started = next((i for i, m in enumerate(messages) if m["role"] in ("assistant", "tool")), len(messages))
    late = next((i for i, m in enumerate(messages[started:], started) if m["role"] in ("developer", "user")), None)
    if late is not None:
        raise DataError(f"{where}: messages[{late}] is a {messages[late]['role']!r} message after the assistant "
                        "started: one prompt per attempt (the runtime sends the problem once)")
    if not any(m["role"] == "user" for m in messages):
        raise DataError(f"{where}: messages has no 'user' turn")
    last = messages[-1]
    if last["role"] != "assistant" or last.get("channel") != "final":
        raise DataError(f"{where}: the last message must be the assistant's on channel 'final' (the answer), got "
                        f"{last['role']!r}/{last.get('channel')!r}")


def load_harmony_dataset(path: str | Path) -> list[HarmonyExample]:
    """Read and validate a Harmony SFT jsonl; errors name ``file:line`` and the field."""
    out = []
    for line, row in read_jsonl_numbered(path, ["messages"], what="Harmony SFT dataset"):
        _check_row(row["messages"], f"{path}:{line}")
        out.append(HarmonyExample(str(row.get("problem_id", f"line {line}")), line, row["messages"]))
    return out


def _assistant_message(m: dict[str, str]) -> Any:
    from openai_harmony import Message, Role

    msg = Message.from_role_and_content(Role.ASSISTANT, m["content"]).with_channel(m["channel"])
    if m.get("recipient"):
        msg = msg.with_recipient(m["recipient"]).with_content_type("code")
    return msg


def render_example(example: HarmonyExample, settings: HarmonySettings) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 = trained) of one conversation, built from the runtime's own pieces: the
    prompt :class:`HarmonyProtocol` renders (ending in ``<|start|>assistant``), each run of assistant messages
    as the model writes it (:func:`completion_ids`, trained), each tool message with the header after it as
    ``add_output`` appends them (not trained)."""
    enc = harmony_encoding()
    first = next(i for i, m in enumerate(example.messages) if m["role"] not in ("developer", "user"))
    head = example.messages[:first]
    user = "\n\n".join(m["content"] for m in head if m["role"] == "user")
    developer = "\n\n".join(m["content"] for m in head if m["role"] == "developer")
    protocol = HarmonyProtocol(replace(settings, developer=developer or settings.developer))
    ids = protocol.render_prompt(user)
    mask = [0] * len(ids)
    run: list[Any] = []
    for m in example.messages[first:]:
        if m["role"] == "assistant":
            run.append(_assistant_message(m))
            continue
        written = completion_ids(run)
        tool = list(enc.render(tool_message(m["content"], m.get("channel", "analysis")))) + list(assistant_header_ids())
        ids += written + tool
        mask += [1] * len(written) + [0] * len(tool)
        run = []
    written = completion_ids(run)  # the row ends with the final answer (checked): <|return|>
    return ids + written, mask + [1] * len(written)


def _check(ids: list[int], mask: list[int], tokenizer: Any, name: str) -> None:
    enc = harmony_encoding()
    if max(ids) >= len(tokenizer):
        raise AuditError(f"{name}: token id {max(ids)} is outside the model's vocabulary ({len(tokenizer)}): "
                         "format: harmony needs a gpt-oss tokenizer (o200k + Harmony's special tokens)")
    text = enc.decode(ids)
    if tokenizer.encode(text, add_special_tokens=False) != ids:
        raise AuditError(f"{name}: the model's tokenizer does not encode the rendered conversation to "
                         "openai-harmony's ids: it is not the gpt-oss tokenizer")
    trained = [i for i, bit in enumerate(mask) if bit]
    if not trained or ids[trained[-1]] != RETURN:
        raise AuditError(f"{name}: the trained tokens must end with <|return|> (the model learns to stop)")
    for i, t in enumerate(ids):
        if t == CALL and not mask[i]:
            raise AuditError(f"{name}: a <|call|> token is not trained")


def audit_harmony(examples: Sequence[HarmonyExample], tokenizer: Any, settings: HarmonySettings, *, max_length: int,
                  drop_untrainable: bool = False, source: str = "dataset", render_index: int = 0,
                  echo: Callable[[str], None] | None = print) -> tuple[Audit, list[tuple[list[int], list[int]]]]:
    """Render every example (:func:`render_example`), check it (ids in the model's vocabulary and equal to its
    tokenizer's, the trained span ends with ``<|return|>``, every ``<|call|>`` trained, something trainable
    after truncation to ``max_length``), print the summary and one example with its trained spans marked.
    Returns the audit and the rendered ``(ids, mask)`` of every example."""
    if not examples:
        raise DataError(f"{source}: no examples to audit")
    rendered: list[tuple[list[int], list[int]]] = []
    stats = []
    shown = full = ""
    for idx, ex in enumerate(examples):
        ids, mask = render_example(ex, settings)
        _check(ids, mask, tokenizer, f"{source}:{ex.line} (problem_id {ex.problem_id})")
        rendered.append((ids, mask))
        stats.append(ExampleStats(ex.problem_id, ex.line, len(ids), sum(mask[:max_length])))
        if idx == render_index:
            full = render_mask(tokenizer, ids, mask, max_length)
            shown = render_mask(tokenizer, ids, mask, max_length, elide=600)
    result = conclude_audit(stats, source=source, template_name="harmony", max_length=max_length,
                            drop_untrainable=drop_untrainable, stop_names=["<|return|>", "<|call|>"], rendered=full)
    if echo is not None:
        echo_audit(result, echo, "Harmony ids equal the tokenizer's, only the assistant's own tokens trained (not "
                   "the system/user/tool messages nor the <|start|>assistant headers the runtime writes), calls "
                   "end in <|call|>, the answer in <|return|>", render_index, shown)
    return result, rendered
