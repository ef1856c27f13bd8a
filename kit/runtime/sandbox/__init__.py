"""Run model-written Python safely and fast (tool-integrated reasoning).

    from kit.runtime.sandbox import Sandbox
    with Sandbox(workers=4, timeout=10, memory_mb=1024) as sb:
        r = sb.run("x = 2**10\nprint(x)", session="sample-3")
        r.status, r.stdout, r.stderr, r.seconds
        r = await sb.arun("print(x + 1)", session="sample-3")   # sees x

See ``pool`` (processes, deadlines, recovery), ``confine`` (limits); code blocks in model text are
:mod:`kit.runtime.protocols.tir`'s.
"""

from kit.runtime.sandbox.pool import Sandbox, SandboxConfig, SandboxError
from kit.runtime.sandbox.result import RunResult, Status, cut_middle

__all__ = ["RunResult", "Sandbox", "SandboxConfig", "SandboxError", "Status", "cut_middle"]
