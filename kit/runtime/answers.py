"""Final answers: extract them from model text, make them competition integers, grade them.

Why a module of its own: public AIMO notebooks lost points here — ``\\boxed{(.*?)}`` cuts
``\\boxed{\\frac{1}{2}}`` to ``\\frac{1``, first-box instead of last-box, ``**73**`` read as ``73**``,
votes split between ``0.5`` and ``\\frac{1}{2}``. Everything here is pure and never raises on bad input:
an unreadable answer is ``None`` (an abstention), never a silent 0.

* :func:`extract_answer` — the answer as written (a string), preferring the part after the reasoning.
* :func:`to_int_answer` — the canonical integer for the competition (modulus, range), or ``None``.
* :func:`grade` — symbolic equivalence (math-verify) for evaluation and rewards, with a time limit that
  works from any thread.

The common cases (plain integers, ``1,000``, ``3.0``, ``$42$``) take a fast path in pure Python; anything
that needs sympy runs in a time-limited helper process (:mod:`kit.runtime.timeouts`).
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction

from kit.runtime.protocols.tir import OUTPUT_BLOCK
from kit.runtime.timeouts import CallFailed, CallTimeout, call_with_timeout

END_OF_REASONING: tuple[str, ...] = ("</think>", "<|end_of_thought|>")
"""Markers that close the reasoning; the answer after the last one is preferred."""

SYMBOLIC_TIMEOUT_S = 2.0
"""Limit for one sympy normalisation (``to_int_answer``)."""
GRADE_TIMEOUT_S = 5.0
"""Limit for one math-verify comparison (``grade``)."""
MAX_INT_DIGITS = 4000
"""Longer digit strings are abstentions (Python refuses int() past 4300 digits by default)."""
_PHRASE_WINDOW = 3000
"""Characters at the end of a region searched for a "final answer is" phrase."""

BOX_NAMES = ("boxed", "fbox", "framebox")
"""Commands whose argument is a boxed answer."""
_PHRASE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*(?:[:\s]|\*\*)*(.{1,120})",
    re.IGNORECASE,
)
_NUMBER_PREFIX = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?(?![\d/^!])")
_NUMERIC_OUTPUT = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
_LONE_NUMBER_LINE = re.compile(r"^\s*(?:\*\*|\$|\\\(|\\\[)?\s*([-+]?\d[\d,]*(?:\.\d+)?)\s*(?:\*\*|\$|\\\)|\\\])?\s*\.?\s*$")

# --- extraction -----------------------------------------------------------------------------------


def _as_text(text: object) -> str | None:
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    return None


def _box_content(text: str, start: int) -> tuple[str, int] | None:
    """Content of the box command whose *name* ends at ``start``, and the index after it.

    ``{...}`` is read with balanced braces (``\\{``/``\\}`` are literal); ``\\boxed 5`` takes the next
    token. An unclosed brace (a truncated output) gives ``None``.
    """
    n = len(text)
    i = start
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":
        if i == start:  # "\boxedfoo" is another command, not a box
            return None
        m = re.match(r"[^\s$\\{}]+", text[i:])
        return (m.group(0), i + m.end()) if m else None
    depth = 0
    j = i
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
        j += 1
    return None


def _boxes_before(text: str, end: int) -> tuple[int, str, int] | None:
    """The last complete box that starts before ``end``: (start, content, stop)."""
    while end > 0:
        best = -1
        best_name = ""
        for name in BOX_NAMES:
            pos = text.rfind(name, 0, end)
            if pos > best:
                best, best_name = pos, name
        if best < 0:
            return None
        parsed = _box_content(text, best + len(best_name))
        if parsed is not None and parsed[0].strip():
            start = best - 1 if best > 0 and text[best - 1] == "\\" else best
            return start, parsed[0], parsed[1]
        end = best
    return None


def has_complete_box(text: str) -> bool:
    """Whether ``text`` contains a complete, non-empty ``\\boxed{...}`` (for stopping at a first answer)."""
    return _boxes_before(text, len(text)) is not None


def last_box(region: str) -> str | None:
    """Last non-empty box of ``region``. Several boxes side by side ("\\boxed{2}, \\boxed{3}") give the
    last one, as the AIMO3 notebooks submit: a model that boxes twice has usually corrected itself, and an
    abstention scores nothing."""
    found = _boxes_before(region, len(region))
    return None if found is None else found[1].strip()


def _clean_phrase_value(value: str) -> str | None:
    value = value.split("\n", 1)[0]
    for token in ("**", "\\(", "\\)", "\\[", "\\]"):
        value = value.replace(token, "")
    value = value.strip().strip("$").strip()
    if not value:
        return None
    m = _NUMBER_PREFIX.match(value)
    if m:
        return m.group(0).rstrip(",")
    value = re.split(r"(?<!\\)\.(?:\s|$)|\$", value, maxsplit=1)[0].strip()
    return value or None


def phrase_answer(region: str) -> str | None:
    """A "final answer is X" / "**Answer:** X" phrase near the end of ``region``."""
    window = region[-_PHRASE_WINDOW:]
    last = None
    for m in _PHRASE.finditer(window):
        last = m
    if last is not None:
        value = _clean_phrase_value(last.group(1))
        if value is not None:
            return value
    return None


_WRAPPERS = re.compile(
    r"^(?:\*\*|__|\$\$?|\\\(|\\\[|\\displaystyle|\\textbf\{|\\mathbf\{|\\text\{|\\boxed\{|[{}\s])+"
    r"|(?:\*\*|__|\$\$?|\\\)|\\\]|[{}.\s])+$"
)
_ANSWER_LABEL = re.compile(r"^\s*(?:\*\*|__)?\s*(?:final\s+)?answer\s*(?:\*\*|__)?\s*[:=]\s*(?:\*\*|__)?", re.IGNORECASE)
_LONE_INTEGER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+|[-+]?\d+")


def lone_integer(text: str) -> str | None:
    """The integer a short answer text *is*, once stripped of its LaTeX and markdown wrappers, or None.

    Why: about one in five real gpt-oss ``final`` messages write the answer without a box — ``41754``,
    ``\\displaystyle 41754``, ``\\(\\displaystyle 325\\)``, ``**325**``, ``Answer: 325`` (docs/design.md
    "AIMO3"). Only a text that is one integer and nothing else counts: a sentence that mentions numbers is
    left to the phrase rules, so "we need 3 more steps" is never read as 3.
    """
    s = _as_text(text)
    if s is None or len(s) > 200:
        return None
    s = _ANSWER_LABEL.sub("", s.strip())
    for _ in range(4):  # nested wrappers: **\(\displaystyle 325\)**
        new = _WRAPPERS.sub("", s)
        if new == s:
            break
        s = new
    return s if _LONE_INTEGER.fullmatch(s) else None


def _last_output_number(region: str) -> str | None:
    """The last executed-code output block when it is a single number (ToRA-style "code answer")."""
    pos = region.rfind("```output")
    if pos < 0:
        return None
    m = OUTPUT_BLOCK.match(region, pos)
    if m is None:
        return None
    value = m.group(1).strip()
    return value if _NUMERIC_OUTPUT.fullmatch(value) else None


def _answer_in(region: str, *, answer_section: bool) -> str | None:
    boxed = last_box(region)
    if boxed is not None:
        return boxed
    phrase = phrase_answer(region)
    if phrase is not None:
        return phrase
    output = _last_output_number(region)
    if output is not None:
        return output
    if answer_section:  # after </think>: a final line that is just a number (bold or in math) counts
        lines = [line for line in region.strip().splitlines() if line.strip()]
        if lines:
            m = _LONE_NUMBER_LINE.match(lines[-1])
            if m:
                return m.group(1)
    return None


def reasoning_end(text: str) -> tuple[int, int] | None:
    """(start, stop) of the last end-of-reasoning marker in ``text``, or None."""
    best: tuple[int, int] | None = None
    for marker in END_OF_REASONING:
        pos = text.rfind(marker)
        if pos >= 0 and (best is None or pos > best[0]):
            best = (pos, pos + len(marker))
    return best


def extract_answer(text: str | None) -> str | None:
    """The final answer as written by the model, or ``None``.

    Prefers the answer after the last ``</think>`` (or ``<|end_of_thought|>``); without one, or with no
    answer after it, the reasoning. In a region: the last complete ``\\boxed{}`` (``\\fbox``,
    ``\\framebox``), else a "final answer is …" phrase near the end, else the last executed-code output
    block if it is a single number (TIR). Never raises.
    """
    s = _as_text(text)
    if not s:
        return None
    end = reasoning_end(s)
    if end is not None:
        found = _answer_in(s[end[1] :], answer_section=True)
        if found is not None:
            return found
        return _answer_in(s[: end[0]], answer_section=False)
    return _answer_in(s, answer_section=False)


# --- integer normalisation ----------------------------------------------------------------------

_UNWRAP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|boxed|fbox|operatorname)\s*\{([^{}]*)\}")
_DROP = re.compile(
    r"\\(?:displaystyle|left|right|!|,|;|:|quad|qquad)|\\ |~|\$|\\\(|\\\)|\\\[|\\\]"
    r"|\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\\degree|\\%|%|\{,\}"
)
_INT = re.compile(r"[-+]?\d+")
_INT_COMMAS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+)")
_SIMPLE_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_TEX_FRACTION = re.compile(r"(-?)\\[dt]?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_TRAILING_WORDS = re.compile(r"([-+]?[\d,]*\.?\d+)\s*(?:[A-Za-z][A-Za-z ]*)$")
_CHOICE_LABEL = re.compile(r"^\(?[A-E]\)\s*(?=\S)|(?<=\S)\s*\(?[A-E]\)$")
"""A multiple-choice label before or after the value (``\\textbf{(C)}\\ 12`` → 12; AMC-style answers)."""


def _clean_answer(answer: str) -> str:
    s = answer.strip()
    for _ in range(3):
        new = _UNWRAP.sub(r"\1", s)
        if new == s:
            break
        s = new
    s = _DROP.sub("", s).strip()
    if "=" in s and not any(op in s for op in ("<", ">", "\\le", "\\ge", "\\ne")):
        s = s.rsplit("=", 1)[1].strip()
    s = s.rstrip(".").strip()
    s = _CHOICE_LABEL.sub("", s).strip()
    m = _TRAILING_WORDS.fullmatch(s)
    if m:
        s = m.group(1)
    return s


def _fast_number(s: str) -> Fraction | None:
    """Exact value of the plain numeric forms, or None when sympy is needed."""
    if _INT.fullmatch(s):
        digits = len(s.lstrip("+-"))
        return Fraction(int(s)) if digits <= MAX_INT_DIGITS else None
    if _INT_COMMAS.fullmatch(s):
        return Fraction(int(s.replace(",", "")))
    if _DECIMAL.fullmatch(s) and len(s) <= MAX_INT_DIGITS:
        return Fraction(s)
    m = _SIMPLE_FRACTION.fullmatch(s)
    if m and len(s) <= MAX_INT_DIGITS and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _TEX_FRACTION.fullmatch(s)
    if m and len(s) <= MAX_INT_DIGITS and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) else value
    return None


def _looks_numeric(s: str) -> bool:
    """Whether a string could evaluate to a number at all (skip sympy for prose and sets)."""
    if not s or len(s) > 300 or not any(ch.isdigit() for ch in s):
        return False
    return not any(ch in s for ch in ",;") and "\\in" not in s and "\\cup" not in s


def _quiet_math_verify() -> None:
    """We disable math-verify's signal timeouts (ours is the helper process); silence its warning."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def sympy_integer(s: str) -> int | None:
    """Integer value of a LaTeX/plain expression via math-verify's parser (runs in a helper process)."""
    import sympy
    from math_verify import parse

    _quiet_math_verify()

    parsed = parse(f"${s}$", parsing_timeout=None)
    if not parsed:
        parsed = parse(s, parsing_timeout=None)
    if not parsed:
        return None
    expr = parsed[0]
    if not isinstance(expr, sympy.Basic):
        return None
    if isinstance(expr, sympy.Float):
        return int(expr) if expr == int(expr) else None
    expr = sympy.nsimplify(expr) if expr.has(sympy.Float) else expr
    if expr.is_number:
        expr = expr.doit()  # math-verify leaves arithmetic unevaluated: \frac{1}{2}+\frac{1}{2} is 1/2 + 1/2
    if expr.is_number and expr.is_integer:
        value = int(expr)
        return value if len(str(abs(value))) <= MAX_INT_DIGITS else None
    if expr.is_Rational and expr.q == 1:
        return int(expr.p)
    return None


def to_int_answer(
    answer: str | None,
    modulus: int | None = None,
    *,
    bounds: tuple[int, int] | None = None,
    timeout: float = SYMBOLIC_TIMEOUT_S,
) -> int | None:
    """Canonical integer of an extracted answer, or ``None`` (an abstention, never a silent 0).

    Accepts "025", "1,000", "3.0", "$42$", "\\text{42}", "42^\\circ", "\\dfrac{84}{2}", "2^{10}",
    "10!" (the last ones via sympy in a time-limited helper). ``modulus`` is applied first (AIMO2: 1000);
    then a value outside ``bounds`` (inclusive) is ``None``. Non-integers are ``None``.
    """
    s = _as_text(answer)
    if s is None:
        return None
    s = _clean_answer(s)
    if not s:
        return None
    value: int | None
    exact = _fast_number(s)
    if exact is not None:
        value = exact.numerator if exact.denominator == 1 else None
    elif _looks_numeric(s):
        try:
            value = call_with_timeout(sympy_integer, s, timeout=timeout)
        except (CallTimeout, CallFailed):
            value = None
    else:
        value = None
    if value is None:
        return None
    if modulus is not None:
        value %= modulus
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        return None
    return value


# --- grading -----------------------------------------------------------------------------------------


def math_verify_equal(pred: str, gold: str) -> bool:
    """math-verify's symbolic comparison (runs in a helper process; no signal-based timeouts)."""
    from math_verify import parse, verify

    _quiet_math_verify()

    def _parse(s: str) -> list:
        wrapped = s if "$" in s or "\\boxed" in s else f"${s}$"
        return parse(wrapped, parsing_timeout=None) or parse(s, parsing_timeout=None)

    gold_parsed = _parse(gold)
    pred_parsed = _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def grade(pred: str | None, gold: str | None, *, timeout: float = GRADE_TIMEOUT_S) -> bool:
    """Whether ``pred`` equals ``gold`` (symbolically). Integer golds take a fast exact path.

    Safe from any thread and bounded by ``timeout``; a timeout or a parser failure grades as wrong.
    """
    p = _as_text(pred)
    g = _as_text(gold)
    if not p or not g or not p.strip() or not g.strip():
        return False
    gold_exact = _fast_number(_clean_answer(g))
    if gold_exact is not None and gold_exact.denominator == 1:
        return to_int_answer(p, timeout=timeout) == gold_exact.numerator
    pred_exact = _fast_number(_clean_answer(p))
    if gold_exact is not None and pred_exact is not None:
        return gold_exact == pred_exact
    try:
        return bool(call_with_timeout(math_verify_equal, p, g, timeout=timeout))
    except (CallTimeout, CallFailed):
        return False
