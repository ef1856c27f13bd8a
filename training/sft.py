"""Supervised fine-tuning on curated reasoning traces:
``python -m training.sft --config training/configs/sft.yaml [--set key=value ...]``.

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

import dataclasses
import itertools
import json
import math
import statistics
import sys
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.learn.data import DataError
from kit.runtime.config import ConfigError
from kit.runtime.protocols.harmony import HarmonySettings
from kit.runtime.tiny_model import CHAT_TEMPLATE as _TINY_CHAT_TEMPLATE
from training.common import cli, on_gpu, read_jsonl_numbered, resolve_model

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
MARK_OPEN, MARK_CLOSE = "⟦", "⟧"
"""Trained spans in the rendered example (characters that maths traces practically never contain)."""
CUT_MARK = "✂[max_length]"


class AuditError(DataError):
    """The dataset, rendered by the chosen chat template, would not train what it should (see module doc)."""


# --- configuration ----------------------------------------------------------------------------------


@dataclass
class SftConfig:
    """Everything one SFT run needs; loaded from YAML (unknown keys are errors naming the file)."""

    model: str = "tiny"
    """Model folder or hub id; ``tiny`` = the offline tiny Qwen2, ``tiny-gpt-oss`` = the offline tiny gpt-oss
    (tests, CPU rehearsals)."""
    data: str = "runs/curate/sft.jsonl"
    """SFT jsonl written by ``python -m training.curate`` (``messages``: [user, assistant]); with
    ``format: harmony`` Harmony conversations (:mod:`training.sft_harmony`)."""
    format: str = "chat"
    """``chat`` (a chat template renders [user, assistant with <think>]) or ``harmony`` (gpt-oss: analysis,
    python calls, tool outputs and the final channel, rendered by openai-harmony)."""
    harmony: HarmonySettings = field(default_factory=HarmonySettings)
    """``format: harmony``: the system message the conversations are rendered with (as the solver prompts)."""
    out: str = "runs/sft"
    """Folder for checkpoints, the final model + tokenizer and the audit files."""
    chat_template: str = "kit"
    """``kit`` (ChatML, keeps reasoning, generation markers), ``model`` (the tokenizer's own; must have
    ``{% generation %}`` markers), ``trl`` (trl's training variant of the model's own template, e.g. for
    DeepSeek-R1-Distill or Qwen3) or a path to a ``.jinja`` file."""
    max_length: int = 24000
    """Tokens per training sequence (per packed sequence with ``packing``); longer examples keep their start."""
    packing: bool = True
    """trl best-fit-decreasing packing (padding-free batches); see docs/sft.md for what works on CPU."""
    drop_untrainable: bool = False
    """Drop (and count) examples left without trainable tokens by truncation instead of failing."""
    learning_rate: float = 1e-5
    num_train_epochs: float = 3.0
    max_steps: int = -1
    """> 0 overrides ``num_train_epochs``."""
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.05
    """Linear warm-up: a float in [0, 1) is a fraction of all steps, >= 1 a number of steps."""
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    gradient_checkpointing: bool = True
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str | None = None
    """transformers optimizer name (None = its default, fused AdamW)."""
    attn_implementation: str | None = None
    """e.g. ``flash_attention_2`` on GPU; None = transformers' default (sdpa)."""
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 0
    """Checkpoint every N steps (0 = none; the final model is always saved)."""
    save_total_limit: int | None = 2
    resume: bool = False
    """Continue from the last ``checkpoint-*`` in ``out`` when there is one."""
    dataset_num_proc: int | None = None
    report_to: str = "none"
    audit_example: int = 0
    """Index of the example the audit renders with its loss mask."""

    def __post_init__(self) -> None:
        positive = ("max_length", "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not self.num_train_epochs > 0:
            raise ValueError("learning_rate and num_train_epochs must be > 0")
        if self.max_steps == 0:
            raise ValueError("max_steps must be > 0, or -1 to train num_train_epochs")
        if self.warmup_steps < 0 or self.save_steps < 0 or self.audit_example < 0:
            raise ValueError("warmup_steps, save_steps and audit_example must be >= 0")
        if not self.chat_template:
            raise ValueError(f"chat_template must be one of {TEMPLATE_CHOICES} or a path to a .jinja file")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {list(FORMATS)}, got {self.format!r}")


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


@dataclass(frozen=True)
class ExampleStats:
    problem_id: str
    line: int
    tokens: int
    """Tokens of the whole rendered example (before truncation)."""
    trained: int
    """Trainable tokens after truncation to ``max_length``."""

    def truncated(self, max_length: int) -> bool:
        return self.tokens > max_length


@dataclass
class AuditSummary:
    """What the audit saw; printed before training and returned in :class:`SftResult`."""

    source: str
    chat_template: str
    max_length: int
    examples: int
    kept: int
    dropped: list[str] = field(default_factory=list)
    """problem_ids without trainable tokens after truncation (only with ``drop_untrainable``)."""
    truncated: int = 0
    tokens: int = 0
    """Tokens the trainer sees (kept examples, after truncation)."""
    trained_tokens: int = 0
    tokens_min: int = 0
    tokens_median: float = 0.0
    tokens_max: int = 0
    stop_tokens: list[str] = field(default_factory=list)
    rendered: str = ""
    """The audited example with its trained spans marked (full text; the console shows it shortened)."""

    def __str__(self) -> str:
        share = self.trained_tokens / self.tokens if self.tokens else 0.0
        return (f"{self.kept}/{self.examples} examples kept ({len(self.dropped)} dropped as untrainable, "
                f"{self.truncated} truncated to {self.max_length}); tokens/example min {self.tokens_min}, "
                f"median {self.tokens_median:.0f}, max {self.tokens_max}; {self.trained_tokens} of "
                f"{self.tokens} tokens trained ({share:.1%}); template {self.chat_template!r}")


@dataclass
class Audit:
    summary: AuditSummary
    kept: list[int]
    """Indices of the examples to train on."""
    stats: list[ExampleStats]
    """One per example, in dataset order (dropped ones included)."""


def _spans(mask: Sequence[int]) -> list[tuple[int, int]]:
    """``[start, end)`` runs of 1s in a 0/1 mask."""
    spans, start = [], None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            spans.append((start, i))
            start = None
    return spans


def render_mask(tokenizer: Any, ids: Sequence[int], mask: Sequence[int], max_length: int | None = None,
                elide: int | None = None) -> str:
    """The decoded example with trained tokens between ⟦ and ⟧ and ✂ where truncation cuts it.

    ``elide``: shorten every untrained/trained segment longer than that many characters to its head and tail
    (for the console; the file gets the full text)."""
    cut = max_length if max_length is not None and len(ids) > max_length else None
    bounds = sorted({0, len(ids), *([cut] if cut else []), *(i for s in _spans(mask) for i in s)})
    parts = []
    for a, b in itertools.pairwise(bounds):
        text = tokenizer.decode(list(ids[a:b]), skip_special_tokens=False)
        if elide and len(text) > elide:
            head, tail = text[: elide * 2 // 3], text[-(elide // 3):]
            text = f"{head} …[{len(text) - len(head) - len(tail)} chars]… {tail}"
        if a == cut:
            parts.append(CUT_MARK)
        parts.append(f"{MARK_OPEN}{text}{MARK_CLOSE}" if mask[a] else text)
    return "".join(parts)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _check_example(ex: SftExample, tokenizer: Any, name: str, stop_ids: set[int], stop_names: list[str],
                   ) -> tuple[list[int], list[int]]:
    """Token ids and assistant mask of one example, as trl computes them; raise if the mask is wrong."""
    from trl.data_utils import _tokenize, common_prefix_length

    # The exact call trl's SFTTrainer makes for a conversational row (sft_trainer.tokenize_fn).
    out = _tokenize(tokenizer, ex.messages, return_assistant_tokens_mask=True, chat_template=None, tools=None)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    spans = _spans(mask)
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


def conclude_audit(stats: list[ExampleStats], *, source: str, template_name: str, max_length: int,
                   drop_untrainable: bool, stop_names: list[str], rendered: str) -> Audit:
    """The examples to keep and the summary, from every example's stats (both formats): untrainable examples
    (nothing left after truncation) fail the audit naming the first, or are dropped and counted."""
    untrainable = [s for s in stats if s.trained == 0]
    if untrainable and not drop_untrainable:
        first, others = untrainable[0], ", ".join(s.problem_id for s in untrainable[1:6])
        raise AuditError(
            f"{source}:{first.line} (problem_id {first.problem_id}): no trainable token left after truncation "
            f"to max_length={max_length} (the example has {first.tokens} tokens, its prompt fills the window)"
            + (f"; {len(untrainable) - 1} more: {others}{' …' if len(untrainable) > 6 else ''}" if others else "")
            + ". Raise max_length, shorten those prompts or set drop_untrainable: true")
    kept = [i for i, s in enumerate(stats) if s.trained > 0]
    if not kept:
        raise AuditError(f"{source}: every example is untrainable at max_length={max_length}")
    lengths = [stats[i].tokens for i in kept]
    summary = AuditSummary(
        source=source, chat_template=template_name, max_length=max_length, examples=len(stats),
        kept=len(kept), dropped=[s.problem_id for s in untrainable],
        truncated=sum(stats[i].truncated(max_length) for i in kept),
        tokens=sum(min(n, max_length) for n in lengths), trained_tokens=sum(stats[i].trained for i in kept),
        tokens_min=min(lengths), tokens_median=statistics.median(lengths), tokens_max=max(lengths),
        stop_tokens=stop_names, rendered=rendered)
    return Audit(summary=summary, kept=kept, stats=stats)


def echo_audit(result: Audit, echo: Callable[[str], None], checks: str, render_index: int, shown: str) -> None:
    """Print the summary, the checks that passed and the rendered example (shortened)."""
    echo(f"sft audit: {result.summary}")
    echo(f"sft audit: checks passed: {checks}")
    if shown:
        echo(f"sft audit: example {render_index} ({result.stats[render_index].problem_id}); trained tokens "
             f"between {MARK_OPEN} {MARK_CLOSE}:\n{shown}")


def write_audit(result: Audit, out_dir: str | Path) -> None:
    """``sft_audit.json`` (the summary, truncated examples) and ``sft_audit_example.txt`` (the marked example)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary
    record = {k: v for k, v in dataclasses.asdict(summary).items() if k != "rendered"}
    record["truncated_examples"] = [s.problem_id for s in result.stats if s.truncated(summary.max_length)]
    (out / "sft_audit.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "sft_audit_example.txt").write_text(summary.rendered + "\n", encoding="utf-8")


def check_prepared_dataset(dataset: Any, result: Audit, *, packing: bool, max_length: int) -> None:
    """Fail unless the dataset trl prepared holds the tokens and trainable tokens the audit counted.

    Without packing the comparison is per example (trl keeps the order); with packing it is on the totals
    (packing merges examples). A mismatch means trl tokenised differently from the audit (another trl
    version?) and the audit's guarantees would not hold."""
    import numpy as np
    import pyarrow.compute as pc

    tokens: list[np.ndarray] = []
    trained: list[np.ndarray] = []
    for batch in dataset.with_format("arrow").iter(batch_size=1024):
        labels = batch.column("labels").combine_chunks()
        flat = pc.list_flatten(labels).to_numpy(zero_copy_only=False)
        parents = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
        tokens.append(pc.list_value_length(labels).to_numpy(zero_copy_only=False))
        trained.append(np.bincount(parents, weights=flat != -100, minlength=len(labels)).astype(int))
    got_tokens, got_trained = np.concatenate(tokens), np.concatenate(trained)
    kept = [result.stats[i] for i in result.kept]
    want_tokens = np.array([min(s.tokens, max_length) for s in kept])
    want_trained = np.array([s.trained for s in kept])
    if packing:
        same = got_tokens.sum() == want_tokens.sum() and got_trained.sum() == want_trained.sum()
    else:
        same = len(got_tokens) == len(kept) and (got_tokens == want_tokens).all() and (
            got_trained == want_trained).all()
    if not same:
        raise AuditError(
            f"trl prepared {len(got_tokens)} sequences with {int(got_tokens.sum())} tokens, "
            f"{int(got_trained.sum())} trainable; the audit counted {len(kept)} examples, "
            f"{int(want_tokens.sum())} tokens, {int(want_trained.sum())} trainable: trl tokenises differently "
            "from the audit (trl version other than requirements pin?), its checks do not hold")


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


def training_arguments(cfg: SftConfig, output_dir: Path) -> Any:
    """trl ``SFTConfig`` for ``cfg``: bf16 weights and mixed precision on GPU, fp32 on CPU. Chat rows mask
    with trl's ``assistant_only_loss``; Harmony rows arrive tokenised with their own ``assistant_masks``."""
    from trl import SFTConfig

    gpu = on_gpu()
    init: dict[str, Any] = {"dtype": "bfloat16" if gpu else "float32"}
    if cfg.attn_implementation:
        init["attn_implementation"] = cfg.attn_implementation
    extra = {"optim": cfg.optim} if cfg.optim else {}
    try:
        return SFTConfig(
            output_dir=str(output_dir), assistant_only_loss=cfg.format == "chat", max_length=cfg.max_length,
            packing=cfg.packing, packing_strategy="bfd", learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
            lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps,
            per_device_train_batch_size=cfg.per_device_train_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            gradient_checkpointing=cfg.gradient_checkpointing, weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, logging_steps=cfg.logging_steps,
            save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
            save_total_limit=cfg.save_total_limit, dataset_num_proc=cfg.dataset_num_proc,
            report_to=cfg.report_to, bf16=gpu, use_cpu=not gpu, model_init_kwargs=init, **extra)
    except ValueError as exc:  # transformers validates scheduler/optimizer names and combinations
        raise ConfigError(f"sft config: {exc}") from None


def run(cfg: SftConfig) -> SftResult:
    """Audit, train and save; see the module docstring."""
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer

    harmony = cfg.format == "harmony"
    if harmony:
        from training.sft_harmony import audit_harmony, load_harmony_dataset

        examples: Sequence[Any] = load_harmony_dataset(cfg.data)
    else:
        examples = load_sft_dataset(cfg.data)
    model_path = resolve_model(cfg.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as exc:
        raise ConfigError(f"model {cfg.model!r}: cannot load its tokenizer ({exc})") from None
    if not harmony:
        tokenizer.chat_template = resolve_chat_template(tokenizer, cfg.chat_template)
    out_dir = Path(cfg.out)
    args = training_arguments(cfg, out_dir)  # before the audit: a typo in a trainer option fails at once
    main_process = PartialState().is_main_process
    if cfg.audit_example >= len(examples):
        raise ConfigError(f"audit_example {cfg.audit_example}: the dataset has {len(examples)} examples")
    echo = print if main_process else None
    if harmony:
        checked, rendered = audit_harmony(examples, tokenizer, cfg.harmony, max_length=cfg.max_length,
                                          drop_untrainable=cfg.drop_untrainable, source=cfg.data,
                                          render_index=cfg.audit_example, echo=echo)
        if main_process:
            write_audit(checked, out_dir)
        rows = [{"input_ids": rendered[i][0], "assistant_masks": rendered[i][1]} for i in checked.kept]
    else:
        checked = audit(examples, tokenizer, max_length=cfg.max_length, drop_untrainable=cfg.drop_untrainable,
                        stop_token_ids=_stop_token_ids(model_path, tokenizer), source=cfg.data,
                        template_name=cfg.chat_template, render_index=cfg.audit_example,
                        out_dir=out_dir if main_process else None, echo=echo)
        rows = [{"messages": examples[i].messages} for i in checked.kept]
    train = Dataset.from_list(rows)
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=train, processing_class=tokenizer)
    check_prepared_dataset(trainer.train_dataset, checked, packing=cfg.packing, max_length=cfg.max_length)
    resume = get_last_checkpoint(str(out_dir)) if cfg.resume and out_dir.is_dir() else None
    if cfg.resume and main_process:
        print(f"sft: resuming from {resume}" if resume else f"sft: no checkpoint in {out_dir}, starting afresh")
    output = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    loss = float(losses[-1]) if losses else float(output.training_loss)
    if not math.isfinite(loss):
        raise RuntimeError(f"sft: training loss is {loss}; the final model is not saved")
    trainer.save_model(str(out_dir))  # model, tokenizer and its chat template (chat_template.jinja)
    if main_process:
        (out_dir / "sft_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n",
                                                 encoding="utf-8")
    return SftResult(out=str(out_dir), steps=trainer.state.global_step, final_loss=loss,
                     audit=checked.summary)


def main(argv: Sequence[str] | None = None) -> int:
    return cli("python -m training.sft", __doc__.split("\n\n")[0], SftConfig, run, DEFAULT_CONFIG, argv)


__all__ = ["FORMATS", "KIT_CHAT_TEMPLATE", "Audit", "AuditError", "AuditSummary", "ExampleStats", "SftConfig",
           "SftExample", "SftResult", "audit", "check_prepared_dataset", "load_sft_dataset", "main",
           "render_mask", "resolve_chat_template", "run", "training_arguments", "write_audit"]

if __name__ == "__main__":
    sys.exit(main())
