"""Tool-integrated reasoning in plain text: find the code a model wants run, and write back what it printed.

Two families (docs/design.md "TIR format"): Qwen style — a ```` ```python ```` block, the model's text is
watched until the closing fence, the sandbox's output is appended as ```` ```output\\n…\\n``` ````;
OpenMath style — ``<tool_call>…</tool_call>`` (the closing tag is a generation stop string) with the same
output block. A :class:`TIRFormat` holds every string and rule of a family, so another model family is a
new format object, and the solver never asks which family it is talking to.

:data:`OUTPUT_BLOCK` is the one pattern of an executed-code output block: the solver writes it, and the
readers of recorded samples (answers from code output, code verdicts, code-call counts) find it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kit.runtime.sandbox.result import RunResult, Status

OUTPUT_BLOCK = re.compile(r"```output\s*\n(.*?)\n?```", re.DOTALL)
"""An executed-code output block (group 1: what the code printed). Every format's output template must
produce text this pattern reads back (checked by :class:`TIRFormat`)."""


@dataclass(frozen=True)
class TIRFormat:
    name: str
    code_start: str
    """How a code block starts, as the model is prompted to write it."""
    code_end: str
    start_pattern: str
    """Regex for a block start as models really write it (``py``/``python3`` fences, spaces)."""
    stop_at_end: bool = False
    """Make ``code_end`` a generation stop string. Off for Qwen fences: `````` also ends the output
    blocks and any other fenced text, so the stream is watched for a closed code block instead."""
    output_template: str = "```output\n{output}\n```\n"
    empty_output: str = "(no output)"
    """What the model sees when the code printed nothing (an empty block confuses models)."""

    def __post_init__(self) -> None:
        sample = self.output_template.format(output="42")
        m = OUTPUT_BLOCK.search(sample)
        if m is None or m.group(1) != "42":
            raise ValueError(f"TIR format {self.name!r}: output_template {self.output_template!r} does not "
                             "write an output block that kit.runtime.protocols.tir.OUTPUT_BLOCK reads back")
        re.compile(self.start_pattern)

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings for generation."""
        return (self.code_end,) if self.stop_at_end else ()

    def _last_start(self, text: str) -> re.Match[str] | None:
        last = None
        for m in re.finditer(self.start_pattern, text):
            last = m
        return last

    def call_end(self, text: str) -> int | None:
        """Index just after the closing marker of the last code block of ``text`` (one request's generated
        text, watched as it streams) when that block is closed, else None. What follows the marker in the
        same chunk — often an output block the model invented — is cut off by the caller."""
        m = self._last_start(text)
        if m is None:
            return None
        end = text.find(self.code_end, m.end())
        return None if end < 0 else end + len(self.code_end)

    def ends_with_call(self, text: str) -> bool:
        """Whether generation ended right at the end of a code block (stopped at ``code_end``)."""
        end = self.call_end(text)
        return end is not None and end == len(text.rstrip())

    def code(self, text: str) -> str | None:
        """The code of the *last* complete code block of ``text``, or None.

        Generation may stop at the closing marker with or without it in ``text``; a block still open at
        the end of ``text`` counts as complete then. A block already followed by an output block has run.
        """
        if not isinstance(text, str) or not text:
            return None
        m = self._last_start(text)
        if m is None:
            return None
        body = text[m.end():]
        end = body.find(self.code_end)
        if end >= 0:
            if body[end + len(self.code_end):].lstrip().startswith("```output"):
                return None
            body = body[:end]
        code = body.strip("\n")
        return code if code.strip() else None

    def render(self, result: RunResult) -> str:
        """The exact text to append after the code block for the model to continue from."""
        if result.status in (Status.OK, Status.TRUNCATED):
            body = result.stdout.rstrip("\n")
        else:
            body = "\n".join(part for part in (result.stdout.rstrip("\n"), result.stderr.strip("\n")) if part)
        return self.output_template.format(output=body if body.strip() else self.empty_output)


QWEN = TIRFormat("qwen", "```python\n", "```", start_pattern=r"```(?:python|py|python3)[ \t]*\n")
OPENMATH = TIRFormat("openmath", "<tool_call>", "</tool_call>", start_pattern=re.escape("<tool_call>"),
                     stop_at_end=True)
FORMATS = {f.name: f for f in (QWEN, OPENMATH)}


def get_format(name: str | TIRFormat) -> TIRFormat:
    if isinstance(name, TIRFormat):
        return name
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown TIR format {name!r}; choose one of {sorted(FORMATS)}") from None


def extract_code(text: str, fmt: str | TIRFormat = QWEN) -> str | None:
    """:meth:`TIRFormat.code` of the named format."""
    return get_format(fmt).code(text)


def format_output(result: RunResult, fmt: str | TIRFormat = QWEN) -> str:
    """:meth:`TIRFormat.render` of the named format."""
    return get_format(fmt).render(result)


def output_blocks(text: str) -> list[str]:
    """What each executed-code output block of a recorded text shows, in order."""
    return [m.group(1) for m in OUTPUT_BLOCK.finditer(text)]


_EXCEPTION_LINE = re.compile(r"^(Traceback \(most recent call last\)|[\w.]*(Error|Exception|Timeout)\b.*)",
                             re.MULTILINE)


def output_shows_error(output: str) -> bool:
    """Whether an output block shows a Python exception (a ``Traceback`` or an ``...Error:`` line): the
    code verdict of recorded samples, which keep no sandbox status."""
    return _EXCEPTION_LINE.search(output) is not None
