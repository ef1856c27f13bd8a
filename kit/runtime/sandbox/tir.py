"""Tool-integrated reasoning text: find the code a model wants run, and format what it gets back.

Two families (DESIGN.md §3): Qwen style — a ```` ```python ```` block, generation stops at the closing
fence, we append ```` ```output\\n…\\n``` ````; OpenMath style — ``<tool_call>…</tool_call>`` with the same
output block. :class:`TIRFormat` holds the strings so another model family is a config, not code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kit.runtime.sandbox.result import RunResult, Status


@dataclass(frozen=True)
class TIRFormat:
    name: str
    code_start: str
    code_end: str
    output_template: str = "```output\n{output}\n```\n"
    empty_output: str = "(no output)"
    """What the model sees when the code printed nothing (an empty block confuses models)."""

    @property
    def stop(self) -> str:
        """Stop string for generation: the end of a code block."""
        return self.code_end


QWEN = TIRFormat("qwen", "```python\n", "```")
OPENMATH = TIRFormat("openmath", "<tool_call>", "</tool_call>")
FORMATS = {f.name: f for f in (QWEN, OPENMATH)}


def get_format(name: str | TIRFormat) -> TIRFormat:
    if isinstance(name, TIRFormat):
        return name
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown TIR format {name!r}; choose one of {sorted(FORMATS)}") from None


_FENCE_START = re.compile(r"```(?:python|py|python3)[ \t]*\n")


def extract_code(text: str, fmt: str | TIRFormat = QWEN) -> str | None:
    """The code of the *last* complete code block of ``text``, or None.

    Generation stops at the closing fence, so the stop string may or may not be in ``text``; a block
    still open at the end of ``text`` counts as complete then. A block already followed by an output
    block has been run and is not returned.
    """
    f = get_format(fmt)
    if not isinstance(text, str) or not text:
        return None
    if f.code_start.startswith("```"):
        starts = list(_FENCE_START.finditer(text))
        if not starts:
            return None
        m = starts[-1]
        body = text[m.end():]
        end = body.find("```")
        if end >= 0:
            rest = body[end + 3:]
            if rest.lstrip().startswith("```output"):
                return None
            body = body[:end]
    else:
        pos = text.rfind(f.code_start)
        if pos < 0:
            return None
        body = text[pos + len(f.code_start):]
        end = body.find(f.code_end)
        if end >= 0:
            if body[end + len(f.code_end):].lstrip().startswith("```output"):
                return None
            body = body[:end]
    code = body.strip("\n")
    return code if code.strip() else None


def format_output(result: RunResult, fmt: str | TIRFormat = QWEN) -> str:
    """The exact text to append after the code block for the model to continue from."""
    f = get_format(fmt)
    if result.status in (Status.OK, Status.TRUNCATED):
        body = result.stdout.rstrip("\n")
    else:
        body = "\n".join(part for part in (result.stdout.rstrip("\n"), result.stderr.strip("\n")) if part)
    return f.output_template.format(output=body if body.strip() else f.empty_output)
