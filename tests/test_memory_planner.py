"""Memory planner against docs/design.md's facts (real Qwen2.5 configs), and engine presets (YAML, overrides)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kit.runtime.config import ConfigError
from kit.runtime.engines.memory import GPUS, GiB, ModelShape, PresetDoesNotFit, plan
from kit.runtime.engines.presets import PRESETS, EnginePreset, PresetError, get_preset

# Public Hugging Face config.json values (Qwen/Qwen2.5-7B-Instruct, Qwen/Qwen2.5-14B-Instruct; the
# DeepSeek-R1-Distill-Qwen models share these shapes). Only the keys the planner reads, plus dtype.
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
QWEN25_14B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120,
    "intermediate_size": 13824, "num_hidden_layers": 48, "num_attention_heads": 40,
    "num_key_value_heads": 8, "vocab_size": 152064, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
QWEN25_7B_AWQ = {**QWEN25_7B, "torch_dtype": "float16", "quantization_config": AWQ}
QWEN25_14B_AWQ = {**QWEN25_14B, "torch_dtype": "float16", "quantization_config": AWQ}
# A 70B-class dense model (Llama-3-70B shape).
FAKE_70B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
    "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "bfloat16",
}


def within(value: float, target: float, rel: float = 0.10) -> bool:
    return abs(value - target) <= rel * target


# --- docs/design.md "Memory" facts ---------------------------------------------------------------------------


def test_kv_bytes_per_token_match_design_facts() -> None:
    kv7 = ModelShape.from_config(QWEN25_7B).kv_bytes_per_token(2)
    kv14 = ModelShape.from_config(QWEN25_14B).kv_bytes_per_token(2)
    assert within(kv7, 56 * 1024), kv7  # "≈56 KB for Qwen2.5-7B"
    assert within(kv14, 192 * 1024), kv14  # "≈192 KB for 14B"
    assert kv7 == 2 * 28 * 4 * 128 * 2  # exactly the formula
    assert ModelShape.from_config(QWEN25_7B).kv_bytes_per_token(1) == kv7 // 2  # fp8 KV halves it


def test_parameter_counts_match_published_sizes() -> None:
    assert within(ModelShape.from_config(QWEN25_7B).param_count(), 7.61e9, 0.02)
    assert within(ModelShape.from_config(QWEN25_14B).param_count(), 14.7e9, 0.02)


def test_awq_weight_estimate_matches_design_fact() -> None:
    w = ModelShape.from_config(QWEN25_7B_AWQ).estimated_weight_bytes(2)
    assert within(w, 5.5e9), w / 1e9  # "7B-AWQ ≈ 5.5 GB"
    w14 = ModelShape.from_config(QWEN25_14B_AWQ).estimated_weight_bytes(2)
    assert within(w14, 10e9), w14 / 1e9  # "14B-AWQ ≈ 10 GB"
    bf16 = ModelShape.from_config(QWEN25_7B).estimated_weight_bytes(2)
    assert within(bf16, 15.2e9, 0.03)


def test_kv_heads_are_split_across_gpus_and_replicated_when_too_few() -> None:
    shape = ModelShape.from_config(QWEN25_7B)  # 4 KV heads
    assert shape.kv_bytes_per_token(2, tp=4) == shape.kv_bytes_per_token(2) // 4
    assert shape.kv_bytes_per_token(2, tp=8) == shape.kv_bytes_per_token(2) // 4  # replicated: 1 head/GPU
    assert shape.per_gpu_fraction(1) == 1.0
    assert 0.25 <= shape.per_gpu_fraction(4) < 0.26


# --- plan() ---------------------------------------------------------------------------------------


def test_7b_awq_fits_l4x4_with_room_to_spare() -> None:
    p = plan(QWEN25_7B_AWQ, get_preset("l4x4"), model_name="r1-distill-7b-awq")
    assert p.fits and p.weight_source == "config" and p.num_gpus == 4
    assert within(p.kv_bytes_per_token, 56 * 1024)
    # 4 × 22.49 GiB × 0.95 ≈ 85.5 GiB minus ~5 GiB weights and the reserves leaves a large KV cache.
    assert 60 * GiB < p.kv_budget_bytes < 80 * GiB
    assert p.tokens_fit == p.kv_budget_bytes // p.kv_bytes_per_token
    assert p.max_concurrency > 32
    assert "fits" in p.summary() and "r1-distill-7b-awq" in p.summary()


def test_14b_awq_does_not_fit_l4x4_at_32_seqs_and_error_says_what_to_lower() -> None:
    preset = get_preset("l4x4")
    with pytest.raises(PresetDoesNotFit) as err:
        plan(QWEN25_14B_AWQ, preset, model_name="qwen2.5-14b-awq")
    msg = str(err.value)
    for needle in ("qwen2.5-14b-awq", "'l4x4'", "192.0 KiB/token", "16,384 × max_num_seqs 32",
                   "lower max_num_seqs to <=", "lower max_model_len to <=", "fp8"):
        assert needle in msg, (needle, msg)
    # The advice is right: the suggested max_num_seqs fits.
    seqs = int(msg.split("lower max_num_seqs to <= ")[1].split(",")[0])
    assert 8 <= seqs < 32
    assert plan(QWEN25_14B_AWQ, preset.with_overrides(max_num_seqs=seqs)).fits
    assert plan(QWEN25_14B_AWQ, preset, check=False).fits is False  # check=False reports instead of raising


def test_fp8_kv_cache_doubles_the_tokens_that_fit() -> None:
    base = plan(QWEN25_14B_AWQ, get_preset("l4x4"), check=False)
    fp8 = plan(QWEN25_14B_AWQ, get_preset("l4x4").with_overrides(kv_cache_dtype="fp8"), check=False)
    assert fp8.kv_bytes_per_token * 2 == base.kv_bytes_per_token
    assert within(fp8.tokens_fit, 2 * base.tokens_fit, 0.01)


def test_70b_bf16_weights_alone_do_not_fit_4_l4s() -> None:
    preset = get_preset("l4x4").with_overrides(max_model_len=131072, max_num_seqs=64)
    with pytest.raises(PresetDoesNotFit) as err:
        plan(FAKE_70B, preset, model_name="fake-70b")
    msg = str(err.value)
    assert "fake-70b" in msg and "131,072 × max_num_seqs 64" in msg and "quantised" in msg
    assert plan(FAKE_70B, preset, check=False).tokens_fit == 0


def test_default_presets_hold_a_7b_model() -> None:
    assert plan(QWEN25_7B, get_preset("h100")).fits  # bf16, 32k × 16
    assert plan(QWEN25_7B_AWQ, get_preset("l4x4")).fits


def test_h100_holds_the_14b_bf16_model() -> None:
    p = plan(QWEN25_14B, get_preset("h100").with_overrides(max_model_len=16384, max_num_seqs=12))
    assert p.fits and p.gpu == "H100" and within(p.weight_bytes, 29.5e9, 0.03)


# openai/gpt-oss-120b's config.json (public values; the keys the planner reads).
GPT_OSS_120B = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880, "num_hidden_layers": 36,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880,
    "num_local_experts": 128, "num_experts_per_tok": 4, "vocab_size": 201088, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 18, "tie_word_embeddings": False,
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]},
    "torch_dtype": "bfloat16",
}


def test_gpt_oss_120b_on_one_h100_with_fp8_kv() -> None:
    shape = ModelShape.from_config(GPT_OSS_120B)
    assert (shape.num_experts, shape.sliding_layers, shape.sliding_window) == (128, 18, 128)
    assert within(shape.param_count(), 116.8e9, 0.02)  # the model card's 117 B
    p = plan(GPT_OSS_120B, get_preset("h100-gpt-oss"))
    assert within(p.weight_bytes, 65e9, 0.03)  # MXFP4 experts, bf16 attention/embeddings: ≈ 65 GB
    # KV grows only on the 18 full-attention layers: 2 × 18 × 8 heads × 64 × 1 byte (fp8)
    assert p.kv_bytes_per_token == 2 * 18 * 8 * 64
    assert p.fits and p.max_num_seqs == 8
    with pytest.raises(PresetDoesNotFit, match="does NOT fit"):  # bf16 KV: fewer attempts or shorter ones
        plan(GPT_OSS_120B, get_preset("h100-gpt-oss").with_overrides(kv_cache_dtype="auto"))
    with pytest.raises(PresetDoesNotFit, match=r"max_num_seqs to <= 1[01]"):
        plan(GPT_OSS_120B, get_preset("h100-gpt-oss").with_overrides(max_num_seqs=16))
    # were every layer full attention, the KV per token would double
    dense_attention = {**GPT_OSS_120B, "layer_types": ["full_attention"] * 36}
    assert plan(dense_attention, get_preset("h100-gpt-oss"), check=False).kv_bytes_per_token == 2 * p.kv_bytes_per_token


def test_page_cache_preload_reads_every_weight_file(tmp_path: Path) -> None:
    from kit.runtime.engines.page_cache import read_into_page_cache

    (tmp_path / "a.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "b.safetensors").write_bytes(b"y" * (17 << 20))  # more than one read chunk
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"z" * 500)  # vLLM skips .bin when safetensors exist
    t0 = time.perf_counter()
    read, seconds = read_into_page_cache(tmp_path, threads=2)
    assert read == 1000 + (17 << 20)
    assert 0 < seconds <= time.perf_counter() - t0  # the time the reads took, not a timestamp or a constant
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "pytorch_model.bin").write_bytes(b"z" * 500)
    assert read_into_page_cache(legacy, threads=1)[0] == 500


def test_safetensors_sizes_are_the_truth_for_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_7B_AWQ))
    sizes = [3_000_000_000, 2_600_000_000]
    for i, size in enumerate(sizes):
        with (tmp_path / f"model-0000{i + 1}-of-00002.safetensors").open("wb") as fh:
            fh.truncate(size)  # sparse: the size is what matters
    p = plan(tmp_path, get_preset("l4x4"))
    assert p.weight_source == "safetensors" and p.weight_bytes == sum(sizes)
    assert within(p.weight_bytes_per_gpu, sum(sizes) / 4, 0.02)
    assert p.model == str(tmp_path)


def test_float32_checkpoint_counts_half_on_gpu(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**QWEN25_7B, "torch_dtype": "float32"}))
    with (tmp_path / "model.safetensors").open("wb") as fh:
        fh.truncate(30_000_000_000)
    assert plan(tmp_path, get_preset("h100"), check=False).weight_bytes == 15_000_000_000


def test_cpu_preset_reports_but_never_raises() -> None:
    p = plan(FAKE_70B, get_preset("cpu").with_overrides(max_model_len=131072, max_num_seqs=64))
    assert p.device == "cpu" and p.gpu is None and not p.fits
    assert p.memory_per_gpu == get_preset("cpu").cpu_kvcache_gb * GiB
    assert "CPU" in p.summary()


def test_explicit_gpu_spec_and_unknown_gpu() -> None:
    preset = get_preset("h100")
    assert plan(QWEN25_7B, preset, GPUS["H200"]).gpu == "H200"
    with pytest.raises(ValueError, match="unknown GPU kind 'B300'"):
        plan(QWEN25_7B, preset.with_overrides(gpu="B300"))


def test_config_variants_are_read() -> None:
    gptq = ModelShape.from_config({**QWEN25_7B, "quantization_config": {"quant_method": "gptq", "bits": 8,
                                                                       "group_size": 128}})
    assert (gptq.quant_method, gptq.quant_bits, gptq.quant_group_size) == ("gptq", 8, 128)
    ct = ModelShape.from_config({**QWEN25_7B, "quantization_config": {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 128}}}}})
    assert (ct.quant_bits, ct.quant_group_size) == (4, 128)
    nested = ModelShape.from_config({"architectures": ["X"], "text_config": QWEN25_7B})
    assert nested.num_layers == 28
    v5 = {k: v for k, v in QWEN25_7B.items() if k != "torch_dtype"} | {"dtype": "float32"}
    assert ModelShape.from_config(v5).dtype == "float32"
    with pytest.raises(ValueError, match="num_hidden_layers"):
        ModelShape.from_config({"hidden_size": 8, "num_attention_heads": 1})


# --- presets --------------------------------------------------------------------------------------


def test_named_presets_hold_the_design_lessons() -> None:
    l4 = get_preset("l4x4")
    assert (l4.tensor_parallel_size, l4.max_num_seqs, l4.gpu_memory_utilization) == (4, 32, 0.95)
    assert 12288 <= l4.max_model_len <= 16384
    assert l4.disable_custom_all_reduce and l4.enable_prefix_caching and l4.quantization is None
    assert l4.env["TRITON_PTXAS_PATH"] == "/usr/local/cuda/bin/ptxas"
    assert l4.env_vars()["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    cpu = get_preset("cpu")
    assert cpu.enforce_eager and cpu.device == "cpu"
    assert cpu.env_vars()["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert cpu.env_vars()["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert set(PRESETS) == {"l4x4", "h100", "h100-gpt-oss", "cpu", "cpu-gpt-oss"}
    oss = get_preset("h100-gpt-oss")  # the AIMO3 winners' server flags (docs/design.md "AIMO3")
    assert (oss.kv_cache_dtype, oss.max_model_len, oss.gpu_memory_utilization) == ("fp8_e4m3", 65536, 0.95)
    assert oss.enable_prefix_caching and oss.async_scheduling and oss.preload_weights
    assert oss.speed == "h100-gpt-oss-120b" and oss.env["TRITON_PTXAS_PATH"] == "/usr/local/cuda/bin/ptxas"
    assert get_preset("cpu-gpt-oss").gpu_memory_utilization == 0.15
    with pytest.raises(PresetError, match=r"unknown engine preset 'l4x8'.*cpu, cpu-gpt-oss, h100"):
        get_preset("l4x8")


def test_yaml_preset_with_base_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("base: l4x4\nname: l4x4-14b\nmax_num_seqs: 16\nenv:\n  FOO: bar\n")
    p = EnginePreset.from_yaml(f, overrides={"max_model_len": 12288})
    assert (p.name, p.max_num_seqs, p.max_model_len, p.tensor_parallel_size) == ("l4x4-14b", 16, 12288, 4)
    assert p.env == {"FOO": "bar"}
    assert plan(QWEN25_14B_AWQ, p).fits
    full = tmp_path / "full.yaml"
    full.write_text("name: tiny-box\ndevice: cpu\ncpu_kvcache_gb: 2\nmax_model_len: 1024\n")
    q = EnginePreset.from_yaml(full)
    assert (q.device, q.cpu_kvcache_gb, q.max_num_seqs) == ("cpu", 2, 32)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("base: l4x4\nmax_num_seq: 16\n", r"unknown key\(s\) 'max_num_seq'; known keys: .*max_num_seqs"),
        ("name: x\ngpu: L4\ntensor_paralel_size: 2\n", r"unknown key\(s\) 'tensor_paralel_size'"),
        ("base: l4x4\nmax_num_seqs: many\n", "max_num_seqs: expected int, got str 'many'"),
        ("base: l4x4\nenforce_eager: 1\n", "enforce_eager: expected bool, got int 1"),
        ("base: l4x4\nenv: [a]\n", "env: expected a mapping"),
        ("base: l4x4\nquantization: awq\n", "awq_marlin"),
        ("base: l4x4\nkv_cache_dtype: int4\n", "kv_cache_dtype must be one of"),
        ("base: l4x4\ngpu_memory_utilization: 1.5\n", r"gpu_memory_utilization must be in \(0, 1\]"),
        ("max_num_seqs: 4\n", "give 'name'"),
        ("- a\n- b\n", "expected a mapping"),
        ("base: nope\n", "unknown engine preset 'nope'"),
    ],
)
def test_bad_yaml_is_rejected_with_the_key_named(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        EnginePreset.from_yaml(f)
    assert str(f) in str(err.value) or "unknown engine preset" in str(err.value)


def test_overrides_reject_unknown_keys() -> None:
    with pytest.raises(PresetError, match=r"overrides of preset 'h100': unknown key\(s\) 'max_len'"):
        get_preset("h100").with_overrides({"max_len": 4096})
    with pytest.raises(PresetError, match="cannot read preset file"):
        EnginePreset.from_yaml("/nonexistent/preset.yaml")
