"""The offline tiny model: tokenizer, chat template, scripted behaviour, cache reuse and atomic writes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.runtime.tiny_model import (
    IM_END,
    MARKER_FILE,
    PAD_TOKEN,
    THINK_CLOSE,
    THINK_OPEN,
    TinyModelError,
    TinyModelSpec,
    build_tiny_model,
    default_path,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    t = time.monotonic()
    path = build_tiny_model(tmp_path_factory.mktemp("cache") / "tiny")
    assert time.monotonic() - t < 30, "the tiny model must build in seconds"
    return path


@pytest.fixture(scope="module")
def tok(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- tokenizer ------------------------------------------------------------------------------------


def test_loads_as_a_qwen2_tokenizer_with_chatml_specials(tok, model_dir: Path) -> None:
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert 1900 <= len(tok) <= 2100
    assert tok.eos_token == IM_END and tok.pad_token == PAD_TOKEN
    config = json.loads((model_dir / "config.json").read_text())
    assert config["vocab_size"] == len(tok) and config["eos_token_id"] == tok.eos_token_id
    assert config["head_dim"] >= 32 and config["num_key_value_heads"] == 1
    assert json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"] == tok.eos_token_id


@pytest.mark.parametrize("text", [
    "Let $x^2 + y^2 = 25$ and \\frac{1}{2}. Find \\boxed{204}.",
    "```python\nfrom sympy import *\nprint(solve(x**2 - 4, x))\n```\n```output\n[-2, 2]\n```",
    "  leading spaces,\ttabs\n\n\nand newlines  ",
    "Unicode: ∑ π ≤ √ — 你好 🙂 é",
    "<think>\nreasoning</think>\n\nThe answer is 7.",
])
def test_round_trip(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_think_tags_are_single_non_special_tokens(tok) -> None:
    for tag in (THINK_OPEN, THINK_CLOSE):
        ids = tok.encode(tag, add_special_tokens=False)
        assert len(ids) == 1, (tag, ids)
        assert tok.added_tokens_decoder[ids[0]].special is False
        assert tag not in tok.all_special_tokens
    ids = tok.encode(f"a{THINK_CLOSE}b{IM_END}", add_special_tokens=False)
    # vLLM decodes with skip_special_tokens=True: </think> stays visible (stop strings can match it),
    # <|im_end|> disappears.
    assert tok.decode(ids, skip_special_tokens=True) == f"a{THINK_CLOSE}b"
    assert tok.added_tokens_decoder[tok.eos_token_id].special is True


def test_chat_template(tok) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1+1?"}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
                      "<|im_start|>assistant\n<think>\n")
    convo = [*msgs, {"role": "assistant", "content": "<think>\nhmm</think>\n\n2"},
             {"role": "user", "content": "And 2+2?"}, {"role": "assistant", "content": "<think>\nok</think>\n\n4"}]
    text = tok.apply_chat_template(convo, tokenize=False)
    assert "hmm" not in text and "<|im_start|>assistant\n2<|im_end|>" in text  # earlier reasoning stripped
    assert text.endswith("<|im_start|>assistant\n<think>\nok</think>\n\n4<|im_end|>\n")  # last turn kept
    out = tok.apply_chat_template(convo, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == f"2{IM_END}<think>\nok</think>\n\n4{IM_END}"


# --- behaviour ------------------------------------------------------------------------------------


def test_random_model_closes_reasoning_and_boxes_an_answer(model_dir: Path, tok) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False,
                                     add_generation_prompt=True)
    inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
    n = inputs["input_ids"].shape[1]
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=200, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                         num_return_sequences=32, pad_token_id=tok.pad_token_id)
    texts = [tok.decode(row[n:], skip_special_tokens=False) for row in out]
    after = [t for t in texts if re.search(r"</think>\n\n\\boxed\{\d{1,3}\}<\|im_end\|>", t)]
    inside = [t for t in texts if THINK_CLOSE not in t and re.search(r"\\boxed\{\d{1,3}\}<\|im_end\|>", t)]
    # Both scripted endings happen, and together they are most samples (the rest: EOS after stray digits).
    assert len(after) >= 8 and len(inside) >= 1 and len(after) + len(inside) >= 18, texts
    ends = sorted(len(tok.encode(t.split(IM_END)[0], add_special_tokens=False)) for t in texts)
    assert ends[len(ends) // 2] <= 60, ends  # a few dozen tokens per sample
    # Greedy after </think> follows the script exactly.
    ids = tok(prompt + "So" + THINK_CLOSE, return_tensors="pt", add_special_tokens=False)
    greedy = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert re.fullmatch(r"\n\n\\boxed\{\d+\}<\|im_end\|>",
                        tok.decode(greedy[0][ids["input_ids"].shape[1]:], skip_special_tokens=False))


# --- cache ----------------------------------------------------------------------------------------


def test_default_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIMO_KIT_CACHE", str(tmp_path))
    assert default_path() == tmp_path / "tiny-qwen2-v1"
    monkeypatch.delenv("AIMO_KIT_CACHE")
    assert default_path() == Path.home() / ".cache" / "aimo-kit" / "tiny-qwen2-v1"


def test_reuse_force_and_spec_change(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build_tiny_model(path)
    weights = path / "model.safetensors"
    first, inode = sha(weights), weights.stat().st_ino
    t = time.monotonic()
    assert build_tiny_model(path) == path
    assert time.monotonic() - t < 5.0 and weights.stat().st_ino == inode  # reused, not rewritten
    build_tiny_model(path, force=True)
    assert weights.stat().st_ino != inode  # rebuilt ...
    assert sha(weights) == first  # ... deterministically (fixed seed, same corpus)
    marker = json.loads((path / MARKER_FILE).read_text())
    build_tiny_model(path, spec=TinyModelSpec(seed=7))
    assert json.loads((path / MARKER_FILE).read_text())["digest"] != marker["digest"]
    assert sha(weights) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or old dirs left behind


@pytest.mark.slow
def test_concurrent_builds_never_expose_half_a_model(tmp_path: Path) -> None:
    """Two processes build the same fresh path at once (as parallel test workers would)."""
    path = tmp_path / "shared"
    code = ("import sys, json; from pathlib import Path; from kit.runtime.tiny_model import build_tiny_model; "
            "p = build_tiny_model(Path(sys.argv[1])); "
            "print(json.loads((p / 'config.json').read_text())['vocab_size'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    seen_partial = False
    while any(p.poll() is None for p in procs):
        # Whenever the final path exists it must be complete (the marker is written before the rename).
        if path.exists() and not (path / MARKER_FILE).exists():
            seen_partial = True
        time.sleep(0.01)
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert not seen_partial
    assert len({o[0].strip() for o in outs}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
    assert {f.name for f in path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", MARKER_FILE}


def test_stale_temp_dirs_do_not_matter(tmp_path: Path) -> None:
    """A crashed build leaves only a hidden temp dir; the next build ignores it."""
    (tmp_path / ".m.build-crashed").mkdir()
    (tmp_path / ".m.build-crashed" / "config.json").write_text("{")
    assert (build_tiny_model(tmp_path / "m") / MARKER_FILE).exists()


def test_bad_paths_give_clear_errors(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(TinyModelError, match="is not a directory"):
        build_tiny_model(f)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(TinyModelError, match=r"notes exists and is not a model directory.*refusing to overwrite"):
        build_tiny_model(other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(TinyModelError, match="a model directory from elsewhere"):
        build_tiny_model(foreign, force=True)
    assert (other / "todo.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (build_tiny_model(empty) / MARKER_FILE).exists()  # an empty directory is fine


# --- the tiny gpt-oss model (AIMO3 stack) ------------------------------------------------------------


@pytest.mark.slow
def test_tiny_gpt_oss_has_harmony_ids_and_the_gpt_oss_shape(tmp_path) -> None:
    import json as _json

    from transformers import AutoTokenizer

    from kit.runtime.engines.memory import plan
    from kit.runtime.engines.presets import get_preset
    from kit.runtime.protocols.harmony import HarmonyProtocol, harmony_encoding
    from kit.runtime.tiny_gpt_oss import build_tiny_gpt_oss

    path = build_tiny_gpt_oss(tmp_path / "oss")
    assert build_tiny_gpt_oss(tmp_path / "oss") == path  # reused: same spec and code
    config = _json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"] and config["vocab_size"] == 201088
    assert config["layer_types"] == ["sliding_attention", "full_attention"] and config["head_dim"] == 64
    tok = AutoTokenizer.from_pretrained(path)
    prompt = HarmonyProtocol().render_prompt("Find $x$ with $x^2 = 49$, \\boxed{} it. 你好")
    enc = harmony_encoding()
    assert tok.encode(enc.decode(prompt), add_special_tokens=False) == prompt  # the same ids as openai-harmony
    p = plan(path, get_preset("cpu-gpt-oss"))
    assert p.kv_bytes_per_token == 2 * 1 * 1 * 64 * 2  # K+V, 1 full-attention layer, 1 KV head, bf16
