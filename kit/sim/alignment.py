"""Lining a continuation prompt up with a recording (tool-integrated reasoning in replay).

A continuation prompt holds the recorded text of earlier turns, possibly cut anywhere, with whatever the
solver appended between them (its own tool output). :func:`align` finds how much of it is recorded text
and where the recording resumes: equal text is consumed as if generated; where it differs inside or just
before a recorded output block, both output blocks are skipped; other appended text is ignored (counted as
unaligned). See :mod:`kit.sim.replay`'s docstring for how the engine uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Alignment:
    """How the generated part of a prompt lines up with one recording."""

    matched: int
    """Characters of the prompt's generated part that are recorded text."""
    resume: int
    """Recording position the continuation starts from."""
    unaligned: bool
    """Some appended text had no recorded output block to replace (it is ignored)."""



def common_prefix(a: str, i: int, b: str, j: int) -> int:
    """Length of the common prefix of ``a[i:]`` and ``b[j:]``; cost grows with the answer, not the texts."""
    n = min(len(a) - i, len(b) - j)
    lo, width = 0, 64  # a[i:i+lo] == b[j:j+lo]
    while lo < n:
        hi = min(lo + width, n)
        if a[i + lo : i + hi] == b[j + lo : j + hi]:
            lo, width = hi, width * 2
            continue
        while hi - lo > 1:  # the first difference is in [lo, hi)
            mid = (lo + hi) // 2
            if a[i + lo : i + mid] == b[j + lo : j + mid]:
                lo = mid
            else:
                hi = mid
        return lo
    return lo


def block_at(text: str, pos: int, start: str, end: str, gap: re.Pattern[str]) -> tuple[int, int] | None:
    """The tool-output block of ``text`` that covers ``pos``, or that begins after only ``gap`` text from
    ``pos``: (block start, block end)."""
    at = text.rfind(start, 0, pos + len(start))
    if at >= 0:
        close = text.find(end, at + len(start))
        stop = len(text) if close < 0 else close + len(end)
        if stop > pos:
            return at, stop
    at = text.find(start, pos)
    if at >= 0 and gap.fullmatch(text, pos, at):
        close = text.find(end, at + len(start))
        return at, len(text) if close < 0 else close + len(end)
    return None


def find_anchor(g: str, i: int, r: str, j: int) -> int:
    """Where ``g`` (from ``i``) continues with the recording's text at ``j``: the first place holding the
    next 32 recorded characters (16, 8 when ``g`` has less of it left), or -1."""
    for width in (32, 16, 8):
        anchor = r[j : j + width]
        if not anchor:
            return -1
        found = g.find(anchor, i)
        if found >= 0 or len(anchor) < width:
            return found
    return -1


def align(recording: str, generated: str, start: str, end: str, gap: re.Pattern[str]) -> Alignment:
    """Line up the generated part of a prompt (recorded text of earlier turns, with text the solver
    appended between them) with ``recording``; see the module docstring."""
    r, g = recording, generated
    i = j = matched = 0
    unaligned = False
    while i < len(g):
        n = common_prefix(g, i, r, j)
        i, j, matched = i + n, j + n, matched + n
        if i >= len(g) or j >= len(r):
            break
        block = block_at(r, j, start, end, gap)
        if block is not None:  # the solver put its own output where the model's recorded one was
            j = block[1]
            own = block_at(g, i, start, end, gap)
            if own is not None:
                i = own[1]
                continue
        found = find_anchor(g, i if block is not None else i + 1, r, j)
        if block is None and (found < 0 or g[i:found].strip()):
            unaligned = True
        if found < 0:  # the rest is appended text; line up its trailing whitespace with the recording
            j += common_prefix(g, max(i, len(g.rstrip())), r, j)
            break
        i = found
    return Alignment(matched, j, unaligned)
