"""How a model's turns become prompts, tool calls and a final text (docs/architecture.md "Protocols").

A protocol is one module with a class that has ``from_config(SolverConfig)`` and opens one
:class:`~kit.runtime.protocols.base.Conversation` per sample; ``PROTOCOLS`` names them. ``text``
(:mod:`.text`, with the tool-call formats of :mod:`.tir`) is the chat-template protocol of R1-style
models; ``harmony`` (:mod:`.harmony`) is gpt-oss's. Classes are imported when first used, so a config that
names ``text`` never needs ``openai-harmony``.
"""

from __future__ import annotations

import importlib
from typing import Any

PROTOCOLS: dict[str, str] = {
    "text": "kit.runtime.protocols.text:TextProtocol",
    "harmony": "kit.runtime.protocols.harmony:HarmonyProtocol",
}
"""Protocol name → ``module:class``; adding a protocol is one module and one line here."""


def make_protocol(config: Any) -> Any:
    """The :class:`~kit.runtime.protocols.base.Protocol` a ``SolverConfig`` names (``config.protocol``)."""
    target = PROTOCOLS.get(config.protocol)
    if target is None:
        raise ValueError(f"unknown protocol {config.protocol!r}; known: {', '.join(PROTOCOLS)}")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name).from_config(config)
