"""Compatibility package: the sandbox moved to :mod:`kit.runtime.sandbox`, the TIR formats to
:mod:`kit.runtime.protocols.tir` (docs/architecture.md: layers).

``import kit.sandbox`` and ``kit.sandbox.<module>`` keep working; each submodule here is an alias of the moved one.
"""

from kit.runtime.protocols.tir import OPENMATH, QWEN, TIRFormat, extract_code, format_output, get_format
from kit.runtime.sandbox import RunResult, Sandbox, SandboxConfig, SandboxError, Status, cut_middle

__all__ = [
    "OPENMATH", "QWEN", "RunResult", "Sandbox", "SandboxConfig", "SandboxError", "Status", "TIRFormat",
    "cut_middle", "extract_code", "format_output", "get_format",
]
