"""training.distill: the loss against an independent computation, the temperature schedule, the token
masks from the real chat template, the config/data errors, and 2 real training steps on CPU with a tiny
student and a different tiny teacher."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from kit.learn.data import DataError
from kit.runtime.config import ConfigError
from training.common import load_config
from training.distill import (
    IGNORE_INDEX,
    DistillCollator,
    DistillConfig,
    check_same_vocabulary,
    distill_loss,
    encode_conversation,
    load_examples,
    main,
    reasoning_spans,
    temperature_at,
)

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"

# --- the loss ---------------------------------------------------------------------------------------


def _softmax(z: list[float], t: float) -> list[float]:
    m = max(x / t for x in z)
    e = [math.exp(x / t - m) for x in z]
    s = sum(e)
    return [x / s for x in e]


def _reference(s_logits, t_logits, labels, weights, alpha, temperature) -> tuple[float, float, float]:
    """Per-position loops over Python floats: no torch op shared with the implementation."""
    num = kl_num = ce_num = den = 0.0
    for s_row, t_row, y_row, w_row in zip(s_logits.tolist(), t_logits.tolist(), labels.tolist(), weights.tolist(),
                                          strict=True):
        for s, t, y, w in zip(s_row, t_row, y_row, w_row, strict=True):
            if y == IGNORE_INDEX:
                continue
            ps, pt = _softmax(s, temperature), _softmax(t, temperature)
            kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps, strict=True))
            ce = -math.log(_softmax(s, 1.0)[y])
            num += w * (alpha * temperature**2 * kl + (1 - alpha) * ce)
            kl_num, ce_num, den = kl_num + w * kl, ce_num + w * ce, den + w
    return num / den, kl_num / den, ce_num / den


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 7, generator=g) * 2
    t = torch.randn(2, 5, 7, generator=g) * 2
    labels = torch.randint(0, 7, (2, 5), generator=g)
    labels[0, :2] = IGNORE_INDEX
    labels[1, 4] = IGNORE_INDEX
    weights = torch.tensor([[0.0, 0.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 1.0, 0.0]])
    return {"s": s, "t": t, "labels": labels, "weights": weights}


@pytest.mark.parametrize(("alpha", "temperature"), [(0.5, 1.0), (0.5, 2.0), (0.3, 0.7), (0.0, 2.0), (1.0, 3.0)])
def test_loss_matches_independent_computation(batch, alpha: float, temperature: float) -> None:
    res = distill_loss(batch["s"], batch["t"], batch["labels"], batch["weights"], alpha, temperature)
    want = _reference(batch["s"], batch["t"], batch["labels"], batch["weights"], alpha, temperature)
    assert [res.loss.item(), res.kl.item(), res.ce.item()] == pytest.approx(want, rel=1e-5)


def test_alpha_endpoints_and_temperature_scaling(batch) -> None:
    args = (batch["s"], batch["t"], batch["labels"], batch["weights"])
    ce_only = distill_loss(*args, alpha=0.0, temperature=2.0)
    assert ce_only.loss.item() == pytest.approx(ce_only.ce.item())
    # alpha=0: the teacher plays no part
    assert distill_loss(batch["s"], -batch["t"], *args[2:], alpha=0.0, temperature=2.0).loss.item() == \
        pytest.approx(ce_only.loss.item())
    for temperature in (1.0, 2.0, 4.0):
        kl_only = distill_loss(*args, alpha=1.0, temperature=temperature)
        assert kl_only.loss.item() == pytest.approx(temperature**2 * kl_only.kl.item())
    # a higher temperature softens both distributions: the KL itself shrinks
    assert distill_loss(*args, 1.0, 4.0).kl.item() < distill_loss(*args, 1.0, 1.0).kl.item()
    # student == teacher: no soft loss at any temperature
    same = distill_loss(batch["s"], batch["s"].clone(), *args[2:], alpha=1.0, temperature=2.0)
    assert same.loss.item() == pytest.approx(0.0, abs=1e-6)


def test_weights_are_normalised_and_masked_positions_ignored(batch) -> None:
    s, t, labels, w = batch["s"], batch["t"], batch["labels"], batch["weights"]
    base = distill_loss(s, t, labels, w, 0.5, 2.0).loss.item()
    assert distill_loss(s, t, labels, w * 7.0, 0.5, 2.0).loss.item() == pytest.approx(base)
    # weight 0 on a labelled position == masking it
    w0 = w.clone()
    w0[1, 0] = 0.0
    masked = labels.clone()
    masked[1, 0] = IGNORE_INDEX
    assert distill_loss(s, t, labels, w0, 0.5, 2.0).loss.item() == \
        pytest.approx(distill_loss(s, t, masked, w, 0.5, 2.0).loss.item())
    # the weights matter: uniform weights give another value
    ones = torch.ones_like(w)
    assert distill_loss(s, t, labels, ones, 0.5, 2.0).loss.item() != pytest.approx(base)
    # garbage at masked positions changes nothing and gets no gradient
    s2 = s.clone()
    s2[0, :2] = 1e4
    t2 = t.clone()
    t2[1, 4] = -1e4
    s2.requires_grad_(True)
    res = distill_loss(s2, t2, labels, w, 0.5, 2.0)
    assert res.loss.item() == pytest.approx(base)
    res.loss.backward()
    assert s2.grad is not None and torch.all(s2.grad[0, :2] == 0) and torch.all(s2.grad[1, 4] == 0)
    assert torch.any(s2.grad[0, 3] != 0)


def test_teacher_gets_no_gradient_and_empty_mask_is_zero(batch) -> None:
    s = batch["s"].clone().requires_grad_(True)
    t = batch["t"].clone().requires_grad_(True)
    distill_loss(s, t, batch["labels"], batch["weights"], 0.5, 2.0).loss.backward()
    assert t.grad is None and s.grad is not None
    none = torch.full_like(batch["labels"], IGNORE_INDEX)
    res = distill_loss(s, t, none, batch["weights"], 0.5, 2.0)
    assert res.loss.item() == 0.0 and res.loss.requires_grad
    with pytest.raises(ValueError, match="same shape"):
        distill_loss(s, t[..., :5], batch["labels"], batch["weights"], 0.5, 2.0)


@pytest.mark.parametrize("chunk_size", [2, 3, 100])
def test_chunked_loss_has_the_same_value_and_gradient(batch, chunk_size: int) -> None:
    grads, values = [], []
    for chunk in (None, chunk_size):
        s = batch["s"].clone().requires_grad_(True)
        res = distill_loss(s, batch["t"], batch["labels"], batch["weights"], 0.4, 1.7, chunk_size=chunk)
        res.loss.backward()
        values.append([res.loss.item(), res.kl.item(), res.ce.item()])
        grads.append(s.grad)
    assert values[1] == pytest.approx(values[0], rel=1e-6)
    torch.testing.assert_close(grads[1], grads[0])


def test_bf16_logits_are_computed_in_float32(batch) -> None:
    args = (batch["labels"], batch["weights"], 0.5, 2.0)
    low = distill_loss(batch["s"].bfloat16(), batch["t"].bfloat16(), *args)
    want = _reference(batch["s"].bfloat16().float(), batch["t"].bfloat16().float(), *args)
    assert low.loss.dtype == torch.float32
    assert low.loss.item() == pytest.approx(want[0], rel=1e-5)


# --- temperature schedule ---------------------------------------------------------------------------


def test_temperature_schedules() -> None:
    for schedule in ("linear", "cosine"):
        temps = [temperature_at(k, 11, 2.0, 1.0, schedule) for k in range(11)]
        assert temps[0] == 2.0 and temps[-1] == pytest.approx(1.0)
        assert all(a >= b for a, b in itertools.pairwise(temps))
        assert temps[5] == pytest.approx(1.5)  # both pass the midpoint halfway
    assert temperature_at(1, 11, 2.0, 1.0, "linear") == pytest.approx(1.9)
    assert temperature_at(1, 11, 2.0, 1.0, "cosine") == pytest.approx(1.0 + 0.5 * (1 + math.cos(math.pi / 10)))
    assert temperature_at(7, 11, 2.0, 1.0, "constant") == 2.0
    assert temperature_at(50, 11, 2.0, 1.0, "linear") == pytest.approx(1.0)  # clamped past the end


# --- data -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from kit.runtime.tiny_model import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model())


MESSAGES = [{"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "<think>\nAdd 2 and 3: that is 5.\n</think>\n\nThe answer is $\\boxed{5}$."}]


def test_reasoning_spans() -> None:
    text = "a<think>b</think>c<think>d"
    assert reasoning_spans(text, "<think>", "</think>") == [(1, 17), (18, len(text))]
    assert reasoning_spans("no markers", "<think>", "</think>") == []


def test_masks_from_the_real_chat_template(tok) -> None:
    enc = encode_conversation(MESSAGES, tok, 10_000)
    ids = enc["input_ids"]
    assistant = [t for t, a in zip(ids, enc["assistant_mask"], strict=True) if a]
    reasoning = [t for t, r in zip(ids, enc["reasoning_mask"], strict=True) if r]
    assert tok.decode(assistant) == MESSAGES[1]["content"] + "<|im_end|>"
    assert tok.decode(reasoning) == "<think>\nAdd 2 and 3: that is 5.\n</think>"
    # reasoning lies inside the assistant turn here, and the user turn is masked out
    assert all(a for a, r in zip(enc["assistant_mask"], enc["reasoning_mask"], strict=True) if r)
    assert "What is" in tok.decode([t for t, a in zip(ids, enc["assistant_mask"], strict=True) if not a])
    short = encode_conversation(MESSAGES, tok, 12)
    assert {len(v) for v in short.values()} == {12}


def test_collator_builds_labels_and_weights() -> None:
    feats = [{"input_ids": [5, 6, 7, 8], "assistant_mask": [0, 1, 1, 1], "reasoning_mask": [0, 1, 1, 0]},
             {"input_ids": [9, 10], "assistant_mask": [0, 1], "reasoning_mask": [0, 0]}]
    out = DistillCollator(pad_token_id=0, reasoning_weight=3.0)(feats)
    assert out["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7, 8], [-100, 10, -100, -100]]
    assert out["weights"].tolist() == [[0.0, 3.0, 3.0, 1.0], [0.0, 1.0, 0.0, 0.0]]


def _cfg(**kw) -> DistillConfig:
    return DistillConfig(teacher="tiny", use_cpu=True, **kw)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_data_errors_name_file_and_field(tmp_path: Path, tok) -> None:
    p = _write(tmp_path / "sft.jsonl", [{"messages": MESSAGES}, {"prompt": "x"}])
    with pytest.raises(DataError, match=r"sft\.jsonl:2: missing field\(s\) \['messages'\]"):
        load_examples(str(p), tok, _cfg(), "tiny")
    p = _write(tmp_path / "sft.jsonl", [{"messages": MESSAGES}, {"messages": [{"role": "user"}]}])
    with pytest.raises(DataError, match=r"sft\.jsonl: record 2: messages\[0\] needs string fields"):
        load_examples(str(p), tok, _cfg(), "tiny")
    p = _write(tmp_path / "sft.jsonl", [{"messages": MESSAGES[:1]}])
    with pytest.raises(DataError, match="no assistant turn"):
        load_examples(str(p), tok, _cfg(), "tiny")
    # MESSAGES is 47 tokens, the assistant turn starting at token 20; a long prompt leaves nothing to learn
    long_prompt = [{"role": "user", "content": "What is 2+3? " * 20}, MESSAGES[1]]
    p = _write(tmp_path / "sft.jsonl", [{"messages": MESSAGES}, {"messages": long_prompt}, {"messages": MESSAGES}])
    data = load_examples(str(p), tok, _cfg(max_length=47), "tiny")
    assert (data.truncated, data.dropped, [len(e["input_ids"]) for e in data.examples]) == (1, 1, [47, 47])
    data = load_examples(str(p), tok, _cfg(max_length=30), "tiny")
    assert (data.truncated, data.dropped, [len(e["input_ids"]) for e in data.examples]) == (3, 1, [30, 30])
    with pytest.raises(DataError, match="no example keeps an assistant token within max_length=20"):
        load_examples(str(p), tok, _cfg(max_length=20), "tiny")


def test_template_problems_are_config_errors_naming_the_model(tmp_path: Path, tok) -> None:
    p = _write(tmp_path / "sft.jsonl", [{"messages": MESSAGES}])
    original = tok.chat_template
    try:
        tok.chat_template = original.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")
        with pytest.raises(ConfigError, match=r"my-student: its chat template marks no assistant tokens"):
            load_examples(str(p), tok, _cfg(), "my-student")
        # an R1-style template that keeps only the text after </think> in every assistant turn
        tok.chat_template = original.replace("not loop.last and ", "")
        with pytest.raises(ConfigError, match=r"my-student: its chat template drops the <think>…</think>"):
            load_examples(str(p), tok, _cfg(), "my-student")
    finally:
        tok.chat_template = original


def test_config_values_are_checked(tmp_path: Path) -> None:
    for key, bad in (("alpha", "1.5"), ("temperature_end", "0"), ("reasoning_weight", "-1"),
                     ("temperature_schedule", "step"), ("dtype", "fp8"),
                     ("loss_chunk_size", "-1")):
        with pytest.raises(ConfigError, match=key):
            load_config(DistillConfig, CONFIGS / "distill_tiny.yaml", [f"--{key}", bad])
    from transformers import TrainingArguments

    own = set(DistillConfig.__dataclass_fields__) - set(TrainingArguments.__dataclass_fields__)
    assert own == {"teacher", "model", "data", "alpha", "temperature_start", "temperature_end",
                   "temperature_schedule", "reasoning_weight", "chat_template", "think_open", "think_close",
                   "max_length", "loss_chunk_size", "dtype", "teacher_dtype"}  # the trainer's keys are its own
    prod = load_config(DistillConfig, CONFIGS / "distill.yaml", ["--use_cpu", "true"])  # bf16 needs a GPU here
    assert (prod.learning_rate, prod.gradient_accumulation_steps, prod.save_total_limit) == (1e-5, 16, 2)
    tiny = load_config(DistillConfig, CONFIGS / "distill_tiny.yaml", ["--learning_rate", "2e-3"])
    assert (tiny.learning_rate, tiny.max_steps, tiny.remove_unused_columns) == (2e-3, 4, False)


# --- real models --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different tiny model with the student's tokenizer: same seed (the tokenizer's corpus depends on
    it), other layer/logit scales, so its weights and next-token distributions differ."""
    from kit.runtime.tiny_model import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "teacher",
                            spec=TinyModelSpec(layer_std=0.1, noise_logit_std=3.0))


@pytest.fixture(scope="module")
def sft_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Curated SFT data as kit.learn.data.write_sft writes it."""
    import polars as pl

    from kit.learn.data import write_sft

    rows = [{"problem_id": f"p{i}", "source": "test", "problem": f"What is {i} plus {i + 1}?",
             "generation": f"<think>\nI add {i} and {i + 1}. Let me check: the sum is {2 * i + 1}.\n</think>\n\n"
                           f"The answer is $\\boxed{{{2 * i + 1}}}$.", "answer": str(2 * i + 1)}
            for i in range(6)]
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    write_sft(pl.DataFrame(rows), path)
    return path


def test_vocabulary_mismatch_names_both_models(tmp_path: Path, tok, teacher_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoTokenizer

    from kit.runtime.tiny_model import TinyModelSpec, build_tiny_model

    check_same_vocabulary(tok, AutoTokenizer.from_pretrained(teacher_path), "tiny", str(teacher_path))
    other = build_tiny_model(tmp_path / "other", spec=TinyModelSpec(seed=7))  # another corpus → another BPE
    with pytest.raises(ConfigError, match=r"student 'tiny' .* and teacher '.*other' .* different vocabularies"):
        check_same_vocabulary(tok, AutoTokenizer.from_pretrained(other), "tiny", str(other))
    rc = main(["--config", str(CONFIGS / "distill_tiny.yaml"), "--teacher", str(other),
               "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "different vocabularies" in err and str(other) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_real_steps_with_a_different_teacher(tmp_path: Path, teacher_path: Path, sft_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.runtime.tiny_model import build_tiny_model

    out = tmp_path / "distilled"
    rc = main(["--config", str(CONFIGS / "distill_tiny.yaml"), "--teacher", str(teacher_path),
               "--data", str(sft_path), "--output_dir", str(out), "--max_steps", "2",
               "--temperature_start", "3.0", "--temperature_end", "1.5"])
    assert rc == 0
    assert f"saved to {out}" in capsys.readouterr().out

    logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2]
    assert [h["temperature"] for h in logs] == [3.0, 1.5]  # the schedule's two ends, as logged
    for h in logs:
        assert math.isfinite(h["loss"]) and h["kl"] > 0 and h["ce"] > 0
        # the logged loss is the formula of its logged terms (alpha 0.5)
        assert h["loss"] == pytest.approx(0.5 * h["temperature"] ** 2 * h["kl"] + 0.5 * h["ce"], rel=1e-4)

    student_path = build_tiny_model()
    before = load_file(str(student_path / "model.safetensors"))
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    after = reloaded.state_dict()
    assert set(before) <= set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(student_path).get_vocab()
    ids = torch.tensor([[1, 2, 3]])
    assert torch.isfinite(reloaded(input_ids=ids).logits).all()


@pytest.mark.slow
def test_chat_template_choice(tmp_path: Path, teacher_path: Path, sft_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """A student whose own template has no generation markers (like DeepSeek-R1-Distill's) is refused with
    ``chat_template: model`` and trains with ``kit``, the template then saved with the model."""
    import shutil

    from transformers import AutoTokenizer

    from kit.runtime.tiny_model import CHAT_TEMPLATE, build_tiny_model

    student = tmp_path / "student"
    shutil.copytree(build_tiny_model(), student)
    tc = json.loads((student / "tokenizer_config.json").read_text())
    tc["chat_template"] = CHAT_TEMPLATE.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")
    (student / "tokenizer_config.json").write_text(json.dumps(tc))
    args = ["--config", str(CONFIGS / "distill_tiny.yaml"), "--model", str(student),
            "--teacher", str(teacher_path), "--data", str(sft_path), "--output_dir", str(tmp_path / "out"),
            "--max_steps", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no {% generation %} markers" in err
    assert main([*args, "--chat_template", "kit"]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == CHAT_TEMPLATE


def test_missing_models_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--config", str(CONFIGS / "distill_tiny.yaml"), "--output_dir", str(tmp_path / "out")]
    assert main([*base, "--teacher", str(tmp_path / "no-teacher")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-teacher': model folder not found (the teacher must be local)" in err
    assert main([*base, "--model", str(tmp_path / "no-student")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-student': no local folder and not loadable" in err
