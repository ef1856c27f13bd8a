"""The built-in tiny models as engines: what the dry-run and the tiny rehearsal notebooks start when no model
is given (vLLM on the CPU with a random model built offline; its answers check the pipeline, not maths).

Kept apart from the session and ``predict``: a submission with a real model never imports the tiny-model
builders (``tests/test_layers.py`` checks ``predict``'s import closure). Callers that run a tiny config
pass :func:`tiny_engine_factory` as the session's ``engine_factory``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kit.runtime.engines.base import Engine
from kit.runtime.engines.presets import get_preset
from kit.runtime.engines.vllm_engine import VLLMEngine
from kit.runtime.run_config import ResolvedConfig
from kit.runtime.tiny_gpt_oss import build_tiny_gpt_oss
from kit.runtime.tiny_model import build_tiny_model

TINY_MODEL_NAME = "built-in tiny random model"


def tiny_model_path(resolved: ResolvedConfig) -> Path:
    """The built-in tiny model of the run's stack, built (or reused from the cache) offline."""
    if resolved.stack.tiny_model == "tiny-gpt-oss":
        return build_tiny_gpt_oss()
    return build_tiny_model()


def tiny_engine_factory(resolved: ResolvedConfig, log: Callable[[str], None] | None = None):
    """An engine factory starting vLLM on the run's tiny model with its preset (a restart builds
    nothing again: the model is cached)."""

    async def start() -> Engine:
        return await VLLMEngine.start(tiny_model_path(resolved), get_preset(resolved.preset), log=log)

    return start
