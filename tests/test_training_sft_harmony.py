"""training.sft with ``format: harmony``: gpt-oss conversations (analysis, python calls, tool outputs, final)
rendered by openai-harmony, the loss mask on the assistant's own tokens, the audit, and a real trl run on the
tiny gpt-oss model (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_harmony import Author, Message, Role

from kit.learn.data import DataError
from kit.runtime.protocols.harmony import HarmonyProtocol, HarmonySettings, completion_ids, harmony_encoding
from kit.runtime.tiny_gpt_oss import build_tiny_gpt_oss
from training.common import load_config
from training.sft import SftConfig, run
from training.sft_audit import MARK_CLOSE, MARK_OPEN, AuditError
from training.sft_harmony import HarmonyExample, audit_harmony, load_harmony_dataset, render_example

ENC = harmony_encoding()
CONVERSATION = [
    {"role": "user", "content": "What is 6 times 7?"},
    {"role": "assistant", "channel": "analysis", "content": "Compute it with python."},
    {"role": "assistant", "channel": "analysis", "recipient": "python", "content": "print(6 * 7)"},
    {"role": "tool", "name": "python", "content": "42"},
    {"role": "assistant", "channel": "analysis", "content": "The tool printed 42."},
    {"role": "assistant", "channel": "final", "content": "The answer is \\boxed{42}."},
]


def _write(path: Path, rows: list[list[dict]]) -> Path:
    path.write_text("".join(json.dumps({"problem_id": f"p{i}", "messages": m}) + "\n" for i, m in enumerate(rows)))
    return path


@pytest.fixture(scope="module")
def oss() -> Path:
    return build_tiny_gpt_oss()


def _assistant(text: str, **kw) -> Message:
    m = Message.from_role_and_content(Role.ASSISTANT, text).with_channel(kw.get("channel", "analysis"))
    return m.with_recipient("python").with_content_type("code") if kw.get("call") else m


def test_rendering_is_what_the_runtime_sends_plus_what_the_model_writes() -> None:
    ids, mask = render_example(HarmonyExample("p", 1, CONVERSATION), HarmonySettings())
    prompt = HarmonyProtocol().render_prompt("What is 6 times 7?")
    turn1 = completion_ids([_assistant("Compute it with python."), _assistant("print(6 * 7)", call=True)])
    tool = list(ENC.render(Message.from_author_and_content(Author.new(Role.TOOL, "python"), "42")
                           .with_recipient("assistant").with_channel("analysis")))
    header = prompt[-2:]  # <|start|>assistant, written by the runtime
    turn2 = completion_ids([_assistant("The tool printed 42."), _assistant("The answer is \\boxed{42}.",
                                                                            channel="final")])
    # the exact token stream of the solver's Harmony loop: prompt, completion, tool message, header, completion
    assert ids == prompt + turn1 + tool + header + turn2
    # trained = exactly the two completions the model generates
    assert mask == [0] * len(prompt) + [1] * len(turn1) + [0] * (len(tool) + 2) + [1] * len(turn2)


def test_rows_are_validated_naming_file_line_and_field(tmp_path: Path) -> None:
    bad = {
        "channel": ([{"role": "user", "content": "q"}, {"role": "assistant", "channel": "thinking", "content": "x"}],
                    r"messages\[1\]\.channel must be one of"),
        "orphan tool": ([{"role": "user", "content": "q"}, {"role": "tool", "content": "1"},
                         {"role": "assistant", "channel": "final", "content": "1"}],
                        r"messages\[1\]: a tool message must follow"),
        "not final": ([{"role": "user", "content": "q"}, {"role": "assistant", "channel": "analysis", "content": "x"}],
                      "the last message must be the assistant's on channel 'final'"),
        "recipient": ([{"role": "user", "content": "q"},
                       {"role": "assistant", "channel": "analysis", "recipient": "browser", "content": "x"}],
                      "the only tool is 'python'"),
        "system": ([{"role": "system", "content": "s"}], r"messages\[0\]\.role 'system'"),
        "late user": ([{"role": "user", "content": "q"}, {"role": "assistant", "channel": "analysis", "content": "x"},
                       {"role": "user", "content": "again"}, {"role": "assistant", "channel": "final", "content": "1"}],
                      r"messages\[2\] is a 'user' message after the assistant started"),
    }
    for name, (messages, match) in bad.items():
        path = _write(tmp_path / f"{name}.jsonl", [CONVERSATION, messages])
        with pytest.raises(DataError, match=rf"{name}\.jsonl:2: .*{match}"):
            load_harmony_dataset(path)


@pytest.mark.slow
def test_audit_marks_the_trained_spans_and_rejects_a_non_gpt_oss_tokenizer(tmp_path: Path, oss: Path) -> None:
    from transformers import AutoTokenizer

    from kit.runtime.tiny_model import build_tiny_model

    examples = load_harmony_dataset(_write(tmp_path / "h.jsonl", [CONVERSATION] * 3))
    lines: list[str] = []
    result, rendered = audit_harmony(examples, AutoTokenizer.from_pretrained(oss), HarmonySettings(),
                                     max_length=4096, echo=lines.append)
    shown = result.summary.rendered
    assert f"{MARK_OPEN}<|channel|>analysis<|message|>Compute it with python." in shown
    assert "print(6 * 7)<|call|>" in shown and shown.rstrip().endswith(f"\\boxed{{42}}.<|return|>{MARK_CLOSE}")
    assert f"{MARK_OPEN}42" not in shown and "What is 6 times 7?" not in shown.split(MARK_OPEN, 1)[-1]
    assert result.summary.kept == 3 and 0 < result.summary.trained_tokens < result.summary.tokens
    assert [sum(mask) for _, mask in rendered] == [result.summary.trained_tokens // 3] * 3
    assert any("checks passed" in line for line in lines)
    with pytest.raises(AuditError, match="outside the model's vocabulary"):
        audit_harmony(examples, AutoTokenizer.from_pretrained(build_tiny_model()), HarmonySettings(),
                      max_length=4096, echo=None)
    with pytest.raises(AuditError, match="no trainable token left"):
        audit_harmony(examples, AutoTokenizer.from_pretrained(oss), HarmonySettings(), max_length=50, echo=None)


@pytest.mark.slow
def test_sft_trains_the_tiny_gpt_oss_on_harmony_conversations(tmp_path: Path, oss: Path) -> None:
    from transformers import AutoModelForCausalLM

    data = _write(tmp_path / "h.jsonl", [CONVERSATION] * 4)
    cfg = load_config(SftConfig, "training/configs/sft_harmony_tiny.yaml",
                      ["--data", str(data), "--output_dir", str(tmp_path / "out"), "--max_length", "512",
                       "--learning_rate", "1e-3"])
    result = run(cfg)
    assert result.steps == 2 and result.final_loss > 0 and result.audit.chat_template == "harmony"
    audit = json.loads((tmp_path / "out" / "sft_audit.json").read_text())
    assert audit["kept"] == 4 and audit["stop_tokens"] == ["<|return|>", "<|call|>"]
    assert MARK_OPEN in (tmp_path / "out" / "sft_audit_example.txt").read_text()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.model_type == "gpt_oss"
