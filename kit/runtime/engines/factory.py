"""Start the engine a run asks for: one place for the dry-run and the Kaggle ``predict``.

``kind="replay"`` plays a trace pool; ``kind="vllm"`` starts vLLM on ``model`` — or, with no model, on
the built-in tiny random model with the ``cpu`` preset (the offline default everywhere in the kit).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kit.runtime.engines.base import Engine

TINY_MODEL_NAME = "built-in tiny random model"


async def start_engine(kind: str, *, model: str | Path | None = None, preset: str | None = None,
                       traces: str = "skythought_aime24",
                       log: Callable[[str], None] | None = None) -> tuple[Engine, str]:
    """(engine, a name for logs and records). ``preset`` defaults to ``cpu`` for the tiny model and
    ``l4x4`` for a real one."""
    if kind == "replay":
        from kit.sim.replay import ReplayEngine

        return ReplayEngine.from_pool(traces), f"replay:{traces}"
    if kind != "vllm":
        raise ValueError(f"unknown engine {kind!r}; use vllm or replay")
    from kit.runtime.engines.presets import get_preset
    from kit.runtime.engines.vllm_engine import VLLMEngine

    if model is None:
        from kit.runtime.tiny_model import build_tiny_model

        path = build_tiny_model()
        chosen = get_preset(preset or "cpu")
    else:
        path = Path(model)
        chosen = get_preset(preset or "l4x4")
    engine = await VLLMEngine.start(path, chosen, log=log)
    return engine, str(path)
