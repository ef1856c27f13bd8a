"""Start-up self-test: prove on this OS that the sandbox's limits hold, or refuse to start.

A submission that silently runs without limits is how a memory bomb takes a 5-hour run down; checking
costs well under a second.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any, Protocol

from kit.runtime.sandbox.result import RunResult, Status


class _Runner(Protocol):
    """What the self-test needs of a sandbox (:class:`kit.runtime.sandbox.pool.Sandbox` is one)."""

    config: Any

    def run(self, code: str, session: str | None = None, *, timeout: float | None = None) -> RunResult: ...


def self_test(sb: _Runner) -> list[str]:
    """Run hostile one-liners; return what was *not* enforced (empty list: all good)."""
    failures: list[str] = []
    mb = sb.config.memory_mb
    r = sb.run(f"x = bytearray({2 * mb} * 1024 * 1024)")
    if r.status is not Status.MEMORY:
        failures.append(f"memory limit ({mb} MB): got {r.status.value}")
    r = sb.run("while True:\n    pass", timeout=0.3)
    if r.status is not Status.TIMEOUT or r.seconds > 0.3 + sb.config.grace + 1.0:
        failures.append(f"time limit: got {r.status.value} after {r.seconds:.2f} s")
    r = sb.run("import os\nos.fork()")
    if r.status is not Status.ERROR:
        failures.append(f"process creation: got {r.status.value}")
    outside = os.path.join(tempfile.gettempdir(), f"aimo-sandbox-selftest-{uuid.uuid4().hex}")
    r = sb.run(f"open({outside!r}, 'w').write('x')")
    if r.status is not Status.ERROR or os.path.exists(outside):
        failures.append(f"writes outside the temp dir: got {r.status.value}")
        if os.path.exists(outside):
            os.remove(outside)
    r = sb.run("print(1 + 1)")
    if r.status is not Status.OK or r.stdout != "2\n":
        failures.append(f"plain code: got {r.status.value} {r.stdout!r} {r.stderr!r}")
    return failures
