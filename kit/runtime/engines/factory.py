"""Start the engine a run configuration asks for: one place for the dry-run and the Kaggle ``predict``.

vLLM on ``config.model`` — or, with no model, on the built-in tiny random model with the ``cpu`` preset
(the offline default everywhere in the kit). Other engines (the simulation layer's replay) come as an
``engine_factory`` from the caller, so the runtime layer never imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from kit.runtime.engines.base import Engine
from kit.runtime.engines.presets import get_preset
from kit.runtime.engines.vllm_engine import VLLMEngine
from kit.runtime.run_config import STACKS, SubmissionConfig
from kit.runtime.tiny_gpt_oss import build_tiny_gpt_oss
from kit.runtime.tiny_model import build_tiny_model

EngineFactory = Callable[[], "Engine | Awaitable[Engine]"]
"""What a caller passes to start an engine other than the configured vLLM one (tests, replay)."""
TINY_MODEL_NAME = "built-in tiny random model"


async def start_engine(config: SubmissionConfig, log: Callable[[str], None] | None = None) -> Engine:
    """The configured vLLM engine (the tiny model when ``config.model`` is None)."""
    if config.engine != "vllm":
        raise ValueError(f"engine {config.engine!r} is not started by the runtime layer: pass its factory "
                         "(replay: kit.sim.replay.engine_factory(config))")

    path = tiny_model_path(config) if config.tiny else config.model_path()
    return await VLLMEngine.start(path, get_preset(config.engine_preset()), log=log)


def tiny_model_path(config: SubmissionConfig) -> Path:
    """The built-in tiny model of the config's stack, built (or reused from the cache) offline."""
    if STACKS[config.stack].tiny_model == "tiny-gpt-oss":
        return build_tiny_gpt_oss()
    return build_tiny_model()


def engine_label(engine: Engine) -> str:
    """A name for logs and records: the model folder for vLLM, ``replay:<pool>`` for replay."""
    info = getattr(engine, "info", None)
    model = getattr(info, "model", None)
    return str(model) if model and model != "recorded" else str(getattr(engine, "name", type(engine).__name__))
