"""Supervised fine-tuning on curated reasoning traces:
``python -m training.sft --config training/configs/sft.yaml [--key value ...]``.

Why this module is more than ``SFTTrainer(...).train()``: the expensive failures of reasoning SFT are
silent. The loss curve looks healthy while

* the chat template drops the ``<think>`` reasoning from assistant turns (DeepSeek-R1-Distill's and
  Qwen3's own templates do, for earlier turns or always) and the model is trained on the final answer only;
* the loss mask covers the prompt (the model learns to write problems) or nothing at all;
* the assistant turn does not end with the model's end-of-generation token, so the fine-tuned model never
  learns to stop and vLLM generates until ``max_tokens`` on every sample;
* an example is longer than ``max_length`` so that truncation leaves it no trainable token (trl then drops
  it quietly, or, when packing, trains on it with zero loss).

So :func:`audit` tokenises every example exactly as trl will (trl's own ``_tokenize`` with
``return_assistant_tokens_mask=True``, labels ``-100`` outside the mask, ``keep_start`` truncation to
``max_length``), checks those four properties, prints and writes one example with its trained spans
marked, and refuses to start otherwise. :func:`run` runs it before loading any weights, then checks that
the dataset trl prepared holds exactly the trainable tokens the audit counted, trains with
``assistant_only_loss=True``, and saves model + tokenizer (with the chat template used) for vLLM.

Recipe facts (docs/design.md "Training formulas"; Fast-Math-R1, github.com/RabotniKuma/Fast-Math-R1, first-stage SFT script):
lr 1e-5, cosine schedule, packing, 24000-token sequences, batch 1 × gradient accumulation 8, gradient
checkpointing, bf16. trl 1.16 behaviour relied on (read in its sources): ``packing=True`` with the default
``bfd`` strategy truncates each example to ``max_length`` (keep the start) and turns on padding-free
batches (flattened sequences + ``position_ids``); without packing, examples are cut to ``max_length`` the
same way and fully masked ones are dropped.
"""

from __future__ import annotations

import math
import sys
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trl import SFTConfig as TrlSFTConfig

from kit.learn.data import DataError
from kit.runtime.config import ConfigError
from kit.runtime.protocols.harmony import HarmonySettings
from kit.runtime.tiny_model import CHAT_TEMPLATE as _TINY_CHAT_TEMPLATE
from training.common import cli, read_jsonl_numbered, resolve_model
from training.sft_audit import (
    Audit,
    AuditError,
    AuditSummary,
    ExampleStats,
    check_prepared_dataset,
    conclude_audit,
    echo_audit,
    render_mask,
    trained_spans,
    write_audit,
)
from training.sft_harmony import HarmonyExample, audit_harmony, load_harmony_dataset

DEFAULT_CONFIG = "training/configs/sft.yaml"

KIT_CHAT_TEMPLATE: str = _TINY_CHAT_TEMPLATE
"""``chat_template: kit``: the tiny model's ChatML template, reused rather than copied. It is the format the
solver prompts with (``VLLMEngine.chat_prompt`` renders the model's saved template with a generation prompt
ending ``<|im_start|>assistant\\n<think>\\n``), keeps the last assistant turn's reasoning verbatim (earlier
turns are stripped, as at inference) and wraps the assistant content and ``<|im_end|>`` in
``{% generation %}`` markers. It fits models whose end-of-turn token is ``<|im_end|>`` (Qwen2.5, Qwen3);
the audit rejects it for a model whose eos differs (DeepSeek-R1-Distill: use ``chat_template: trl``)."""

FORMATS = ("chat", "harmony")
TEMPLATE_CHOICES = ("kit", "model", "trl")
"""``chat_template`` values other than a path to a Jinja file."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


# --- configuration ----------------------------------------------------------------------------------


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SftConfig(TrlSFTConfig):
    """trl's :class:`trl.SFTConfig` (every trl and transformers key, trl's defaults) plus the kit's keys: the
    model and data, the data's format, the chat template and the audit. ``assistant_only_loss`` follows
    ``format`` (chat rows are masked by trl from the template's generation markers; Harmony rows arrive with
    their own mask). ``training/configs/sft.yaml`` documents the production values."""

    model: str = field(default="tiny", metadata=_help(
        "Model folder or hub id; 'tiny' = the offline tiny Qwen2, 'tiny-gpt-oss' = the offline tiny gpt-oss."))
    data: str = field(default="runs/curate/sft.jsonl", metadata=_help(
        "SFT jsonl written by training.curate (messages: [user, assistant]); with format: harmony, Harmony "
        "conversations (training.sft_harmony)."))
    format: str = field(default="chat", metadata=_help(
        "'chat' (a chat template renders [user, assistant with <think>]) or 'harmony' (gpt-oss: analysis, python "
        "calls, tool outputs and the final channel, rendered by openai-harmony)."))
    harmony_reasoning_effort: Literal["low", "medium", "high"] = field(default="high", metadata=_help(
        "format: harmony: the system message's reasoning effort (low, medium, high), as the solver prompts."))
    chat_template: str = field(default="kit", metadata=_help(
        "'kit' (ChatML, keeps reasoning, generation markers), 'model' (the tokenizer's own; must have "
        "{% generation %} markers), 'trl' (trl's training variant of the model's own template, e.g. for "
        "DeepSeek-R1-Distill or Qwen3) or a path to a .jinja file."))
    drop_untrainable: bool = field(default=False, metadata=_help(
        "Drop (and count) examples left without trainable tokens by truncation instead of failing."))
    audit_example: int = field(default=0, metadata=_help(
        "Index of the example the audit renders with its loss mask."))

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {list(FORMATS)}, got {self.format!r}")
        if not self.chat_template:
            raise ValueError(f"chat_template must be one of {TEMPLATE_CHOICES} or a path to a .jinja file")
        if self.audit_example < 0:
            raise ValueError(f"audit_example must be >= 0, got {self.audit_example}")
        if self.max_length is None or self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        self.harmony()
        self.assistant_only_loss = self.format == "chat"
        super().__post_init__()

    def harmony(self) -> HarmonySettings:
        """The system message Harmony conversations are rendered with (``format: harmony``)."""
        if self.harmony_reasoning_effort not in ("low", "medium", "high"):
            raise ValueError(f"harmony_reasoning_effort must be low, medium or high, got "
                             f"{self.harmony_reasoning_effort!r}")
        return HarmonySettings(reasoning_effort=self.harmony_reasoning_effort)


# --- dataset ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SftExample:
    """One validated row: its messages, where it came from (for error messages) and its reasoning text."""

    problem_id: str
    line: int
    messages: list[dict[str, str]]
    reasoning: str
    """Text between ``<think>`` and ``</think>`` of the last assistant message, stripped."""


_ROLES = ("system", "user", "assistant")


def _reasoning(content: str) -> str | None:
    start, end = content.find(THINK_OPEN), content.find(THINK_CLOSE)
    if start < 0 or end < start:
        return None
    return content[start + len(THINK_OPEN) : end].strip()


def _check_messages(messages: Any, where: str) -> str:
    """Validate one row's ``messages``; return the last assistant turn's reasoning (errors name ``where``)."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(
                msg.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
        if msg["role"] not in _ROLES:
            raise DataError(f"{where}: messages[{i}].role {msg['role']!r} is not one of {list(_ROLES)}")
    last = len(messages) - 1
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: messages[{last}].role must be 'assistant' (the turn trained on), "
                        f"got {messages[-1]['role']!r}")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise DataError(f"{where}: messages has no 'user' turn before the assistant's")
    content = messages[-1]["content"]
    if not content.strip():
        raise DataError(f"{where}: messages[{last}].content (assistant) is empty")
    reasoning = _reasoning(content)
    if reasoning is None:
        raise DataError(f"{where}: messages[{last}].content (assistant) has no {THINK_OPEN}…{THINK_CLOSE} "
                        "reasoning block (expected kit.learn.data.format_assistant's layout)")
    if not reasoning:
        raise DataError(f"{where}: messages[{last}].content (assistant) has an empty {THINK_OPEN} block")
    return reasoning


def load_sft_dataset(path: str | Path) -> list[SftExample]:
    """Read and validate the curated SFT jsonl; errors name ``file:line`` and the field."""
    path = Path(path)
    examples = []
    for line, row in read_jsonl_numbered(path, ["messages"], what="SFT dataset"):
        where = f"{path}:{line}"
        reasoning = _check_messages(row["messages"], where)
        pid = str(row.get("problem_id", f"line {line}"))
        examples.append(SftExample(pid, line, row["messages"], reasoning))
    return examples


# --- chat template ----------------------------------------------------------------------------------


def resolve_chat_template(tokenizer: Any, choice: str) -> str:
    """The Jinja template to train with for ``chat_template: choice`` (see :class:`SftConfig`).

    Every choice must carry ``{% generation %}`` markers: without them ``assistant_only_loss`` has no mask
    to use and trl would swap in a template of its own choosing, which the user never audited.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    own = tokenizer.chat_template
    if isinstance(own, dict):
        own = own.get("default")
    if choice == "kit":
        return KIT_CHAT_TEMPLATE
    if choice in ("model", "trl"):
        if not own:
            raise ConfigError(f"chat_template: {choice}: the model's tokenizer has no chat template; "
                              "use chat_template: kit or a .jinja file")
        if choice == "model":
            if not has_generation_markers(own):
                raise ConfigError(
                    "chat_template: model: the tokenizer's template has no {% generation %} markers, so "
                    "assistant_only_loss cannot mask it (real reasoning-model templates lack them and strip "
                    "<think> content); use chat_template: trl, kit or a .jinja file")
            return own
        try:
            patched = get_training_chat_template(tokenizer)
        except ValueError:
            raise ConfigError("chat_template: trl: trl has no training variant of this model's template; "
                              "use chat_template: kit or a .jinja file") from None
        return own if patched is None else patched
    path = Path(choice)
    if not path.is_file():
        raise ConfigError(f"chat_template: {choice!r} is neither one of {list(TEMPLATE_CHOICES)} nor an "
                          "existing Jinja file")
    text = path.read_text(encoding="utf-8")
    if not has_generation_markers(text):
        raise ConfigError(f"chat_template: {path} has no {{% generation %}} … {{% endgeneration %}} markers "
                          "around the assistant content")
    return text


# --- audit ------------------------------------------------------------------------------------------


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _check_example(ex: SftExample, tokenizer: Any, name: str, stop_ids: set[int], stop_names: list[str],
                   ) -> tuple[list[int], list[int]]:
    """Token ids and assistant mask of one example, as trl computes them; raise if the mask is wrong."""
    from trl.data_utils import _tokenize, common_prefix_length

    # The exact call trl's SFTTrainer makes for a conversational row (sft_trainer.tokenize_fn).
    out = _tokenize(tokenizer, ex.messages, return_assistant_tokens_mask=True, chat_template=None, tools=None)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    spans = trained_spans(mask)
    if not spans:
        raise AuditError(f"{name}: the chat template marks no assistant token for training "
                         "({% generation %} markers around the wrong part?)")
    texts = [_nfc(tokenizer.decode(ids[a:b], skip_special_tokens=False)) for a, b in spans]
    if not any(_nfc(ex.reasoning) in t for t in texts):
        raise AuditError(
            f"{name}: the <think> reasoning is not in the trained tokens: the chat template drops or "
            f"masks it, so SFT would train on the answer only. Trained text starts: {texts[-1][:160]!r}")
    prompt_ids = _tokenize(tokenizer, ex.messages[:-1], add_generation_prompt=False, chat_template=None,
                           tools=None)["input_ids"]
    in_prompt = [i for i in range(common_prefix_length(prompt_ids, ids)) if mask[i]]
    if in_prompt:
        raise AuditError(f"{name}: the loss mask covers {len(in_prompt)} prompt token(s), e.g. "
                         f"{tokenizer.decode(ids[in_prompt[0]:in_prompt[0] + 8])!r}: the template's "
                         "{% generation %} markers enclose more than the assistant turn")
    # Like trl's is_chat_template_stop_token_trained, ignore trailing whitespace tokens.
    last = next((ids[i] for i in reversed(range(*spans[-1])) if tokenizer.decode([ids[i]]).strip()), None)
    if last not in stop_ids:
        ending = tokenizer.convert_ids_to_tokens(last) if last is not None else "whitespace"
        raise AuditError(
            f"{name}: the trained assistant turn ends with {ending!r}, not an end-of-generation token of the "
            f"model ({', '.join(stop_names)}): the fine-tuned model would never learn to stop. Use a template "
            "whose assistant turn ends with the eos token (chat_template: trl for DeepSeek-R1-Distill models)")
    return ids, mask


def audit(examples: Sequence[SftExample], tokenizer: Any, *, max_length: int, drop_untrainable: bool = False,
          stop_token_ids: Collection[int] | None = None, source: str = "dataset", template_name: str = "",
          render_index: int = 0, out_dir: str | Path | None = None,
          echo: Callable[[str], None] | None = print) -> Audit:
    """Tokenise ``examples`` with ``tokenizer``'s chat template exactly as trl's SFTTrainer does and check
    that, for every example, the reasoning is trained, the prompt is not, the trained span ends with an
    end-of-generation token (``stop_token_ids``, default the tokenizer's eos) and something is left to
    train after truncation to ``max_length``.

    A violation raises :class:`AuditError` naming the example (problem_id and line); untrainable examples
    are dropped and counted instead when ``drop_untrainable``. Prints the summary and one example rendered
    with :func:`render_mask` through ``echo``; with ``out_dir`` writes ``sft_audit.json`` and
    ``sft_audit_example.txt`` there.
    """
    if not examples:
        raise DataError(f"{source}: no examples to audit")
    stop_ids = set(stop_token_ids) if stop_token_ids else {tokenizer.eos_token_id}
    stop_names = sorted(tokenizer.convert_ids_to_tokens(sorted(stop_ids)))
    stats: list[ExampleStats] = []
    rendered = shown = ""
    for idx, ex in enumerate(examples):
        ids, mask = _check_example(ex, tokenizer, f"{source}:{ex.line} (problem_id {ex.problem_id})", stop_ids,
                                   stop_names)
        stats.append(ExampleStats(ex.problem_id, ex.line, len(ids), sum(mask[:max_length])))
        if idx == render_index:
            rendered = render_mask(tokenizer, ids, mask, max_length)
            shown = render_mask(tokenizer, ids, mask, max_length, elide=600)
    result = conclude_audit(stats, source=source, template_name=template_name, max_length=max_length,
                            drop_untrainable=drop_untrainable, stop_names=stop_names, rendered=rendered)
    if echo is not None:
        echo_audit(result, echo, "reasoning trained, prompt masked, turn ends with "
                   f"{'/'.join(stop_names)}, every kept example has trainable tokens", render_index, shown)
    if out_dir is not None:
        write_audit(result, out_dir)
    return result


# --- training ---------------------------------------------------------------------------------------


@dataclass
class SftResult:
    out: str
    steps: int
    final_loss: float
    """Last logged training loss (the run's mean loss when no step was logged)."""
    audit: AuditSummary

    def __str__(self) -> str:
        return (f"sft: {self.steps} steps, final loss {self.final_loss:.4f}, model + tokenizer saved to "
                f"{self.out}\nsft audit: {self.audit}")


def _stop_token_ids(model_path: str, tokenizer: Any) -> set[int]:
    """The tokenizer's eos plus the generation config's eos ids (vLLM stops on any of them)."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} - {None}
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's eos is all vLLM knows
        eos = None
    ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


RESUME_LAST = ("true", "last")
"""``resume_from_checkpoint`` values (trl's key) meaning "the last checkpoint in ``output_dir``, if any"."""


def _resume_point(cfg: SftConfig, out_dir: Path) -> str | None:
    """The checkpoint to resume from: trl's ``resume_from_checkpoint`` as a path, or ``true``/``last`` for the
    last ``checkpoint-*`` in ``output_dir`` (a restarted job continues; a first run starts afresh)."""
    value = cfg.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "none", ""):
        return None
    if str(value).lower() in RESUME_LAST:
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None
    if not Path(value).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {value} is not a checkpoint folder")
    return str(value)


def run(cfg: SftConfig) -> SftResult:
    """Audit, train and save; see the module docstring. ``cfg`` is trl's ``SFTConfig`` itself, handed to
    the trainer as it is."""
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    harmony = cfg.format == "harmony"
    examples: Sequence[SftExample] | Sequence[HarmonyExample] = (
        load_harmony_dataset(cfg.data) if harmony else load_sft_dataset(cfg.data))
    model_path = resolve_model(cfg.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as exc:
        raise ConfigError(f"model {cfg.model!r}: cannot load its tokenizer ({exc})") from None
    if not harmony:
        tokenizer.chat_template = resolve_chat_template(tokenizer, cfg.chat_template)
    out_dir = Path(cfg.output_dir)
    main_process = PartialState().is_main_process
    if cfg.audit_example >= len(examples):
        raise ConfigError(f"audit_example {cfg.audit_example}: the dataset has {len(examples)} examples")
    echo = print if main_process else None
    max_length = int(cfg.max_length)
    if harmony:
        checked, rendered = audit_harmony(examples, tokenizer, cfg.harmony(), max_length=max_length,  # type: ignore[arg-type]
                                          drop_untrainable=cfg.drop_untrainable, source=cfg.data,
                                          render_index=cfg.audit_example, echo=echo)
        if main_process:
            write_audit(checked, out_dir)
        rows = [{"input_ids": rendered[i][0], "assistant_masks": rendered[i][1]} for i in checked.kept]
    else:
        checked = audit(examples, tokenizer, max_length=max_length, drop_untrainable=cfg.drop_untrainable,  # type: ignore[arg-type]
                        stop_token_ids=_stop_token_ids(model_path, tokenizer), source=cfg.data,
                        template_name=cfg.chat_template, render_index=cfg.audit_example,
                        out_dir=out_dir if main_process else None, echo=echo)
        rows = [{"messages": examples[i].messages} for i in checked.kept]  # type: ignore[union-attr]
    resume = _resume_point(cfg, out_dir)
    trainer = SFTTrainer(model=model_path, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    check_prepared_dataset(trainer.train_dataset, checked, packing=cfg.packing, max_length=max_length)
    if cfg.resume_from_checkpoint is not None and main_process:
        print(f"sft: resuming from {resume}" if resume else f"sft: no checkpoint in {out_dir}, starting afresh")
    output = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    loss = float(losses[-1]) if losses else float(output.training_loss)
    if not math.isfinite(loss):
        raise RuntimeError(f"sft: training loss is {loss}; the final model is not saved")
    trainer.save_model(str(out_dir))  # model, tokenizer and its chat template (chat_template.jinja)
    if main_process:
        (out_dir / "sft_config.json").write_text(cfg.to_json_string(), encoding="utf-8")
    return SftResult(out=str(out_dir), steps=trainer.state.global_step, final_loss=loss,
                     audit=checked.summary)


def main(argv: Sequence[str] | None = None) -> int:
    return cli("python -m training.sft", __doc__.split("\n\n")[0], SftConfig, run, DEFAULT_CONFIG, argv)


__all__ = ["FORMATS", "KIT_CHAT_TEMPLATE", "Audit", "AuditError", "AuditSummary", "ExampleStats", "SftConfig",
           "SftExample", "SftResult", "audit", "check_prepared_dataset", "load_sft_dataset", "main",
           "render_mask", "resolve_chat_template", "run", "write_audit"]

if __name__ == "__main__":
    sys.exit(main())
