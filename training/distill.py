"""Distil a teacher into a student on curated traces:
``python -m training.distill --config training/configs/distill.yaml [--key value ...]``.

The loss (TriMER's recipe, docs/design.md "Training formulas") mixes the teacher's soft targets with the trace's hard targets,
per assistant token ``i``:

    l_i = α · T² · KL(softmax(z_t,i / T) ‖ softmax(z_s,i / T)) + (1 − α) · CE(z_s,i, y_i)

    L   = Σ_i w_i · l_i / Σ_i w_i        (w_i = reasoning_weight inside <think>…</think>, else 1)

* ``KL(p_t ‖ p_s)`` is the forward KL of Hinton et al., "Distilling the Knowledge in a Neural Network"
  (2015, arXiv:1503.02531): the student covers every continuation the teacher likes. Softening both with
  ``T`` exposes the teacher's ranking of the unlikely tokens; the ``T²`` keeps the soft term's gradient
  on the same scale as the CE term's when ``T`` changes (the soft gradients shrink as ``1/T²``, §2.1).
* ``T`` is annealed from ``temperature_start`` to ``temperature_end`` (linear or cosine over the run):
  soft early (learn the shape of the teacher's distribution), sharp late (match its decisions).
* Only assistant tokens count (the prompt is the same for teacher and student and not ours to learn):
  the mask comes from the chat template's ``{% generation %}`` markers via
  ``apply_chat_template(..., return_assistant_tokens_mask=True)``, as trl's SFT ``assistant_only_loss``.
* Reasoning tokens (``<think>`` through ``</think>``) weigh ``reasoning_weight``; weights are
  normalised per batch, so the loss stays a weighted *mean* and its scale does not depend on it.

Why not trl: trl 1.16's ``DistillationTrainer`` and ``experimental.gkd.GKDTrainer`` optimise a
generalised JSD (Agarwal et al., "On-Policy Distillation of Language Models", arXiv:2306.13649) on
student-generated (on-policy) or mixed completions, with no CE term, no ``T²`` factor, no per-token
weights and a fixed temperature. Their ``beta=0`` is the same forward KL, but the rest of this formula
would have to be patched into their loss, so this is a small ``transformers.Trainer`` subclass whose loss
is the pure function :func:`distill_loss` (tested on its own). The teacher is forced on the curated
trace (off-policy), the setting in which TriMER report the recipe.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from transformers import TrainingArguments

from kit.learn.data import DataError
from kit.runtime.config import ConfigError
from training.common import cli, read_jsonl, resolve_model
from training.sft import resolve_chat_template

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label of a position that takes no loss (prompt, padding): the convention of torch/transformers."""

Schedule = Literal["linear", "cosine", "constant"]


# --- configuration ----------------------------------------------------------------------------------


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class DistillConfig(TrainingArguments):
    """transformers' :class:`~transformers.TrainingArguments` (the trainer's keys, its names and defaults, as
    trl's configs inherit them) plus the distillation's own keys. ``remove_unused_columns`` is off: the
    collator needs the masks."""

    teacher: str | None = field(default=None, metadata=_help(
        "Local folder of the teacher (same tokenizer as the student), or 'tiny'. Required."))
    model: str = field(default="tiny", metadata=_help(
        "The student: a local folder, a hub id reachable from this machine, or 'tiny'."))
    data: str = field(default="runs/curate/sft.jsonl", metadata=_help(
        "Curated SFT jsonl ({\"messages\": [...]} per line, as training.curate writes it)."))
    alpha: float = field(default=0.5, metadata=_help(
        "Weight of the soft (teacher) term; 1 - alpha goes to the CE on the trace."))
    temperature_start: float = field(default=2.0, metadata=_help("Softening temperature at the first step."))
    temperature_end: float = field(default=1.0, metadata=_help("Softening temperature at the last step."))
    temperature_schedule: Schedule = field(default="cosine", metadata=_help(
        "linear or cosine annealing; constant keeps temperature_start throughout."))
    reasoning_weight: float = field(default=2.0, metadata=_help(
        "Weight of tokens from <think> through </think>; other assistant tokens weigh 1."))
    chat_template: str = field(default="model", metadata=_help(
        "As in training.sft (same choices, same resolver): 'model' = the student's own template (an SFT output "
        "carries the one it was trained with), 'trl', 'kit' or a .jinja file. It must mark assistant content "
        "with {% generation %}; it is saved with the distilled model."))
    think_open: str = "<think>"
    think_close: str = "</think>"
    max_length: int = field(default=16384, metadata=_help(
        "Tokens per example (prompt + answer); longer examples are cut at the end."))
    loss_chunk_size: int = field(default=0, metadata=_help(
        "> 0: compute the loss over this many positions at a time (see distill_loss); 0 = at once."))
    dtype: str = field(default="auto", metadata=_help(
        "Student weights' dtype at load (auto = the checkpoint's): float32, bfloat16, float16, auto."))
    teacher_dtype: str = field(default="auto", metadata=_help("Teacher weights' dtype at load (as dtype)."))

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("teacher: required (a local model folder, or tiny)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for name in ("temperature_start", "temperature_end"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.temperature_schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"temperature_schedule must be linear, cosine or constant, got "
                             f"{self.temperature_schedule!r}")
        if self.reasoning_weight < 0:
            raise ValueError(f"reasoning_weight must be >= 0, got {self.reasoning_weight}")
        if self.loss_chunk_size < 0:
            raise ValueError(f"loss_chunk_size must be >= 0, got {self.loss_chunk_size}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        for name in ("dtype", "teacher_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"{name} must be one of {sorted(_DTYPES)}, got {getattr(self, name)!r}")
        self.remove_unused_columns = False
        super().__post_init__()


_DTYPES = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


# --- the loss ---------------------------------------------------------------------------------------


class DistillLoss(NamedTuple):
    """The total loss and its two terms, each a weighted mean over the unmasked positions (the terms are
    for logging; ``loss = α·T²·kl + (1−α)·ce``)."""

    loss: torch.Tensor
    kl: torch.Tensor
    ce: torch.Tensor


def _token_terms(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position KL(p_t^T ‖ p_s^T) and CE for rows of logits ``[N, V]`` (float32 inside)."""
    import torch.nn.functional as F

    s, t = s.float(), t.float()
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    # F.kl_div(input, target) = Σ target·(log target − input): with input = log p_s it is KL(p_t ‖ p_s).
    kl = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(-1)
    return kl, F.cross_entropy(s, y, reduction="none")


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 weights: torch.Tensor, alpha: float, temperature: float, chunk_size: int | None = None
                 ) -> DistillLoss:
    """``Σ w·(α·T²·KL(p_t^T ‖ p_s^T) + (1−α)·CE) / Σ w`` over the positions whose label is not -100.

    Shapes: logits ``[..., V]``, labels and weights ``[...]``; position ``i``'s logits predict
    ``labels[i]`` (the caller shifts). The teacher gets no gradient. The CE is at temperature 1 (it is
    the trace's likelihood). Computed in float32 whatever the logits' dtype: bf16 log-softmax over a
    150k vocabulary loses the small probabilities the soft term is about. With no unmasked position (or
    all weights 0) every term is 0, still attached to the student's graph.

    ``chunk_size``: positions per chunk, each chunk under activation checkpointing
    (``torch.utils.checkpoint``), so the float32 ``[N, V]`` intermediates (two log-softmaxes, the scaled
    logits, the KL terms) exist for one chunk at a time, forward and backward; same value and gradient.
    Without it, 16k positions × 152k vocabulary ≈ 10 GB per intermediate. Measured on CPU (N=2048,
    V=32000, ``[N, V]`` = 250 MB, glibc told to return freed memory): forward peak 1.75 GB at once vs
    0.8 GB with chunks of 256 — what remains is the two gathered ``[N, V]`` logit copies.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher logits "
                         f"{tuple(teacher_logits.shape)}: same shape required")
    if labels.shape != student_logits.shape[:-1] or weights.shape != labels.shape:
        raise ValueError(f"labels {tuple(labels.shape)} / weights {tuple(weights.shape)} must have the logits' "
                         f"leading shape {tuple(student_logits.shape[:-1])}")
    keep = labels != IGNORE_INDEX
    s = student_logits[keep]
    t = teacher_logits[keep].detach()
    w = weights[keep].float()
    y = labels[keep]
    norm = w.sum()
    if s.shape[0] == 0 or norm <= 0:
        zero = student_logits.sum() * 0.0
        return DistillLoss(zero, zero.detach(), zero.detach())
    if chunk_size is None or chunk_size >= s.shape[0]:
        kl_tok, ce_tok = _token_terms(s, t, y, temperature)
    else:
        parts = [checkpoint(_token_terms, sc, tc, yc, temperature, use_reentrant=False)
                 for sc, tc, yc in zip(s.split(chunk_size), t.split(chunk_size), y.split(chunk_size), strict=True)]
        kl_tok, ce_tok = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    per_token = alpha * temperature**2 * kl_tok + (1.0 - alpha) * ce_tok
    return DistillLoss((w * per_token).sum() / norm, ((w * kl_tok).sum() / norm).detach(),
                       ((w * ce_tok).sum() / norm).detach())


def temperature_at(step: int, total_steps: int, start: float, end: float, schedule: Schedule = "cosine") -> float:
    """The distillation temperature at optimiser step ``step`` (0-based) of ``total_steps``: ``start`` at
    the first step, ``end`` at the last; cosine spends longer near both ends than linear."""
    if schedule == "constant" or total_steps <= 1:
        return start
    p = min(max(step / (total_steps - 1), 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * p
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown temperature schedule {schedule!r}")


# --- data -------------------------------------------------------------------------------------------


def reasoning_spans(text: str, think_open: str, think_close: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` from each ``think_open`` through its ``think_close`` (inclusive of
    both markers: where to close the reasoning is a decision worth the extra weight); an unclosed
    ``think_open`` runs to the end of the text."""
    spans = []
    for m in re.finditer(re.escape(think_open), text):
        if spans and m.start() < spans[-1][1]:
            continue  # a nested/repeated open inside a span already counted
        close = text.find(think_close, m.end())
        spans.append((m.start(), len(text) if close < 0 else close + len(think_close)))
    return spans


def encode_conversation(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase, max_length: int,
                        think_open: str = "<think>", think_close: str = "</think>") -> dict[str, list[int]]:
    """Token ids, the assistant mask (from the template's generation markers) and the reasoning mask
    (tokens that start inside a :func:`reasoning_spans` span of the rendered text), cut to ``max_length``."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True,
                                        tokenizer_kwargs={"return_offsets_mapping": True})
    spans = reasoning_spans(text, think_open, think_close)
    reasoning = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return {"input_ids": list(enc["input_ids"])[:max_length],
            "assistant_mask": list(enc["assistant_masks"])[:max_length],
            "reasoning_mask": reasoning[:max_length]}


def _check_messages(rows: list[dict[str, Any]], path: str) -> None:
    for i, row in enumerate(rows, 1):
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{path}: record {i}: field 'messages' must be a non-empty list of {{role, content}}")
        for j, m in enumerate(msgs):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise DataError(f"{path}: record {i}: messages[{j}] needs string fields 'role' and 'content'")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"{path}: record {i}: field 'messages' has no assistant turn (nothing to learn)")


@dataclass
class EncodedData:
    examples: list[dict[str, list[int]]]
    truncated: int
    dropped: int
    """Examples with no assistant token left after truncation."""


def load_examples(path: str, tokenizer: PreTrainedTokenizerBase, cfg: DistillConfig, model_name: str) -> EncodedData:
    """Read and validate the SFT jsonl and encode it; template problems are config errors naming the
    model whose template it is (no generation markers; reasoning stripped from the assistant turn)."""
    rows = read_jsonl(path, ["messages"], what="SFT dataset")
    _check_messages(rows, path)
    examples, truncated, dropped = [], 0, 0
    for i, row in enumerate(rows, 1):
        full = encode_conversation(row["messages"], tokenizer, sys.maxsize, cfg.think_open, cfg.think_close)
        if not any(full["assistant_mask"]):
            raise ConfigError(f"{model_name}: its chat template marks no assistant tokens (record {i} of {path}); "
                              "distillation needs '{% generation %}' markers around assistant content")
        if (any(cfg.think_close in m["content"] for m in row["messages"] if m["role"] == "assistant")
                and not any(r and a for r, a in zip(full["reasoning_mask"], full["assistant_mask"], strict=True))):
            raise ConfigError(f"{model_name}: its chat template drops the {cfg.think_open}…{cfg.think_close} "
                              f"reasoning of the assistant turn (record {i} of {path}); use a template that "
                              "keeps it for the last turn")
        ex = {k: v[: cfg.max_length] for k, v in full.items()}
        truncated += len(full["input_ids"]) > cfg.max_length
        if not any(ex["assistant_mask"][1:]):  # position 0 is never predicted
            dropped += 1
            continue
        examples.append(ex)
    if not examples:
        raise DataError(f"{path}: no example keeps an assistant token within max_length={cfg.max_length}")
    return EncodedData(examples, truncated, dropped)


@dataclass
class DistillCollator:
    """Right-pads a batch and builds ``labels`` (-100 off the assistant turn) and per-token ``weights``."""

    pad_token_id: int
    reasoning_weight: float

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(features), n), dtype=torch.long)
        labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((len(features), n), dtype=torch.float32)
        for b, f in enumerate(features):
            k = len(f["input_ids"])
            x = torch.tensor(f["input_ids"], dtype=torch.long)
            assistant = torch.tensor(f["assistant_mask"], dtype=torch.bool)
            reasoning = torch.tensor(f["reasoning_mask"], dtype=torch.bool)
            ids[b, :k], attn[b, :k] = x, 1
            labels[b, :k] = torch.where(assistant, x, IGNORE_INDEX)
            w = torch.where(reasoning, self.reasoning_weight, 1.0)
            weights[b, :k] = torch.where(assistant, w, 0.0)
        return {"input_ids": ids, "attention_mask": attn, "labels": labels, "weights": weights}


# --- models -----------------------------------------------------------------------------------------


def check_same_vocabulary(student_tok: PreTrainedTokenizerBase, teacher_tok: PreTrainedTokenizerBase,
                          student: str, teacher: str) -> None:
    """Distillation compares the two next-token distributions id by id: the token→id maps must agree."""
    sv, tv = student_tok.get_vocab(), teacher_tok.get_vocab()
    if sv == tv:
        return
    differ = sorted((t for t in sv.keys() | tv.keys() if sv.get(t) != tv.get(t)), key=lambda t: (sv.get(t, -1), t))
    eg = ", ".join(f"{t!r}: {sv.get(t)} vs {tv.get(t)}" for t in differ[:3])
    raise ConfigError(f"student {student!r} ({len(sv)} tokens) and teacher {teacher!r} ({len(tv)} tokens) have "
                      f"different vocabularies ({len(differ)} tokens differ, e.g. {eg}); distillation needs the "
                      "same tokenizer")


def _load_model(name: str, dtype: str):  # -> PreTrainedModel
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name, dtype=_DTYPES[dtype])


def _vocab_rows(model, n_tokens: int, name: str) -> None:
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < n_tokens:
        raise ConfigError(f"{name}: its LM head has {rows} rows but the tokenizer has {n_tokens} tokens")


# --- trainer ----------------------------------------------------------------------------------------


def _trainer_class():
    """Built lazily: importing transformers' Trainer takes seconds and the CLI should fail fast on a bad
    config first."""
    import torch
    from transformers import Trainer

    class DistillTrainer(Trainer):
        """``Trainer`` whose loss is :func:`distill_loss` against a frozen teacher's logits, with the
        temperature annealed over the optimiser steps; logs ``temperature``, ``kl`` and ``ce``."""

        loss_is_scaled_for_ga = False  # distill_loss is a per-micro-batch mean: let Trainer divide by GA

        def __init__(self, *args: Any, teacher: torch.nn.Module, alpha: float, temperature_start: float,
                     temperature_end: float, temperature_schedule: Schedule, n_vocab: int,
                     loss_chunk_size: int | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.loss_chunk_size = loss_chunk_size
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
            self.alpha, self.n_vocab = alpha, n_vocab
            self.temperature_start, self.temperature_end = temperature_start, temperature_end
            self.temperature_schedule = temperature_schedule
            self._metrics: dict[str, list[float]] = {"temperature": [], "kl": [], "ce": []}

        def current_temperature(self) -> float:
            return temperature_at(self.state.global_step, self.state.max_steps, self.temperature_start,
                                  self.temperature_end, self.temperature_schedule)

        def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            fwd = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
            outputs = model(**fwd)
            with torch.no_grad():
                teacher_logits = self.teacher(**fwd).logits
            # Both heads may be padded past the tokenizer (e.g. Qwen2.5 7B/14B vs 1.5B): compare real tokens.
            n = self.n_vocab
            temperature = self.current_temperature()
            res = distill_loss(outputs.logits[:, :-1, :n], teacher_logits[:, :-1, :n], inputs["labels"][:, 1:],
                               inputs["weights"][:, 1:], self.alpha, temperature, self.loss_chunk_size)
            if model.training:
                self._metrics["temperature"].append(temperature)
                self._metrics["kl"].append(res.kl.item())
                self._metrics["ce"].append(res.ce.item())
            return (res.loss, outputs) if return_outputs else res.loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if self._metrics["kl"]:
                logs = {**logs, **{k: sum(v) / len(v) for k, v in self._metrics.items()}}
                for v in self._metrics.values():
                    v.clear()
            super().log(logs, start_time)

    return DistillTrainer


# --- entry point ------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    out: str
    steps: int
    examples: int
    truncated: int
    dropped: int
    last_log: dict[str, float]

    def __str__(self) -> str:
        logged = {k: round(v, 4) for k, v in self.last_log.items() if k in ("loss", "kl", "ce", "temperature")}
        return (f"distill: {self.steps} steps on {self.examples} examples ({self.truncated} truncated, "
                f"{self.dropped} dropped); last {logged}; saved to {self.out}")


def run(cfg: DistillConfig) -> DistillResult:
    """Check the pair (vocabulary) and the data before training, train, save model + tokenizer + the
    trainer state (its ``log_history`` has loss, kl, ce and temperature per logging step)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    assert cfg.teacher is not None  # checked by the config
    student_name, teacher_name = resolve_model(cfg.model), resolve_model(cfg.teacher)
    if not Path(teacher_name).expanduser().is_dir():
        raise ConfigError(f"teacher {cfg.teacher!r}: model folder not found (the teacher must be local)")
    try:
        tok = AutoTokenizer.from_pretrained(student_name)
    except OSError as exc:  # transformers' "not a local folder nor a reachable hub repo"
        raise ConfigError(f"student {cfg.model!r}: no local folder and not loadable from the hub "
                          f"({str(exc).splitlines()[0]})") from None
    check_same_vocabulary(tok, AutoTokenizer.from_pretrained(teacher_name), cfg.model, cfg.teacher)
    if tok.pad_token_id is None:
        raise ConfigError(f"{cfg.model}: the tokenizer has no pad token")
    tok.chat_template = resolve_chat_template(tok, cfg.chat_template)
    data = load_examples(cfg.data, tok, cfg, cfg.model)

    student = _load_model(student_name, cfg.dtype)
    teacher = _load_model(teacher_name, cfg.teacher_dtype)
    _vocab_rows(student, len(tok), cfg.model)
    _vocab_rows(teacher, len(tok), cfg.teacher)

    trainer = _trainer_class()(
        model=student, args=cfg, train_dataset=Dataset.from_list(data.examples), processing_class=tok,
        data_collator=DistillCollator(tok.pad_token_id, cfg.reasoning_weight), teacher=teacher, alpha=cfg.alpha,
        temperature_start=cfg.temperature_start, temperature_end=cfg.temperature_end,
        temperature_schedule=cfg.temperature_schedule, n_vocab=len(tok), loss_chunk_size=cfg.loss_chunk_size or None,
    )
    trainer.train()
    trainer.save_model(cfg.output_dir)
    trainer.save_state()
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    (Path(cfg.output_dir) / "distill_config.json").write_text(json.dumps(
        {**cfg.to_dict(), "student_resolved": student_name, "teacher_resolved": teacher_name}, indent=2,
        default=str), encoding="utf-8")
    return DistillResult(cfg.output_dir, trainer.state.global_step, len(data.examples), data.truncated, data.dropped,
                         train_logs[-1] if train_logs else {})


def main(argv: Sequence[str] | None = None) -> int:
    return cli("python -m training.distill", __doc__, DistillConfig, run, "training/configs/distill.yaml", argv)


__all__ = ["DistillCollator", "DistillConfig", "DistillLoss", "DistillResult", "check_same_vocabulary",
           "distill_loss", "encode_conversation", "load_examples", "main", "reasoning_spans", "run",
           "temperature_at"]

if __name__ == "__main__":
    sys.exit(main())
