"""The typed result of one sandbox call, and the output shaping shared by worker and pool."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

DEFAULT_CUT_MARKER = "\n<output cut: {omitted} characters omitted>\n"


class Status(str, Enum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    KILLED = "killed"
    TRUNCATED = "truncated"
    """Ran to the end but printed more than the output limit (head and tail kept)."""


OK_STATUSES = frozenset({Status.OK.value, Status.TRUNCATED.value})
"""Statuses (as recorded, ``Status.value``) of a code call that ran to its end."""


@dataclass(frozen=True)
class RunResult:
    status: Status
    stdout: str
    stderr: str
    seconds: float
    session_restarted: bool = False
    """The session's earlier state was lost (its process was killed by an earlier call) before this one."""

    @property
    def ok(self) -> bool:
        return self.status.value in OK_STATUSES


def cut_middle(text: str, limit: int, marker: str = DEFAULT_CUT_MARKER) -> tuple[str, bool]:
    """Keep the head and the tail of ``text`` within ``limit`` characters, marking the cut.

    The tail matters as much as the head: the end of a long output holds the final value or the
    traceback's last line, which cutting only the head would hide.
    """
    if limit <= 0 or len(text) <= limit:
        return text, False
    head = limit // 2
    tail = limit - head
    omitted = len(text) - head - tail
    return text[:head] + marker.format(omitted=omitted) + text[-tail:], True


class HeadTailBuffer:
    """A write-only text sink that keeps the first and last ``keep`` characters and counts the rest.

    Used as ``sys.stdout`` in the worker so that printing 10^7 lines costs memory of O(keep).
    """

    def __init__(self, keep: int) -> None:
        self.keep = max(keep, 1)
        self.head: list[str] = []
        self.head_len = 0
        self.tail = ""
        self.total = 0

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        self.total += n
        if self.head_len < self.keep:
            take = s[: self.keep - self.head_len]
            self.head.append(take)
            self.head_len += len(take)
            s = s[len(take) :]
            if not s:
                return n
        self.tail = (self.tail + s)[-self.keep :] if len(s) < self.keep else s[-self.keep :]
        return n

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def getvalue(self, limit: int, marker: str = DEFAULT_CUT_MARKER) -> tuple[str, bool]:
        """The output within ``limit`` characters (``keep`` must be >= ``limit``), and whether it was cut."""
        head = "".join(self.head)
        if self.total <= len(head) + len(self.tail):  # nothing was dropped between head and tail
            return cut_middle(head + self.tail, limit, marker)
        h = limit // 2
        t = limit - h
        return head[:h] + marker.format(omitted=self.total - h - t) + self.tail[len(self.tail) - t :], True
