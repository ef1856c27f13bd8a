"""Approximate token counts without a tokenizer (replay, simulation, data curation).

One estimator for the whole kit, so token budgets in replay, the simulator and curation's length filter
agree with each other. Use the model's own tokenizer where one is loaded (the vLLM engine does).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@functools.lru_cache(maxsize=8)
def _token_regex(max_letters: int, max_punct: int) -> re.Pattern[str]:
    letters = r"[^\W\d_]"
    punct = r"(?:[^\s\w]|_)"
    return re.compile(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"  # English contractions, as Qwen's pre-tokenizer
        rf"|(?:[^\w\r\n]|_)?{letters}{{1,{max_letters}}}"  # a word with one leading space/symbol
        r"|\d"  # every digit its own token (Qwen)
        rf"| ?{punct}{{1,{max_punct}}}[\r\n]*"  # symbol runs, with the newlines that follow
        r"|\s*[\r\n]+|\s+(?!\S)|\s+",
        re.DOTALL,
    )


@dataclass(frozen=True)
class ApproxTokenizer:
    """Qwen2's pre-tokenizer regex, with long words and symbol runs split, as a stand-in for BPE.

    Why approximate: the replay engine needs token *counts* (budgets, speed) and token *boundaries*
    (streaming chunks) without a tokenizer download. BPE never merges across Qwen's pre-tokens (digits
    are single tokens, ``" \\frac"`` is ``" \\"`` + ``"frac"``), so the pure pre-tokenizer bounds the real
    token count from below; splitting words longer than ``max_letters`` and symbol runs longer than
    ``max_punct`` adds roughly what BPE adds. Measured on the bundled traces: 3.25 chars/token on
    SkyThought AIME (LaTeX-heavy long CoT; pure pre-tokenizer: 3.30), 3.88 on ToRA GSM8K code.
    """

    max_letters: int = 10
    max_punct: int = 4
    name: str = "approx"

    @property
    def identity(self) -> str:
        """Equal for the same counting rules (the offline readers' tokenizer mismatch check compares these)."""
        return f"approx:{self.max_letters}:{self.max_punct}"

    @property
    def regex(self) -> re.Pattern[str]:
        return _token_regex(self.max_letters, self.max_punct)

    def pieces(self, text: str) -> list[str]:
        """The tokens of ``text`` as strings; they concatenate back to ``text``."""
        return self.regex.findall(text)

    def count(self, text: str) -> int:
        return len(self.regex.findall(text))

    def ends(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Where each text's tokens end (character offsets): the budget curve cuts at them."""
        out = []
        for text in texts:
            pieces = self.regex.findall(text)  # pieces concatenate back to the text
            out.append(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)).cumsum())
        return out
