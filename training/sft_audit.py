"""The SFT audit's shared part: per-example counts, the verdict, the printed and written report, and the
check that trl prepared what was audited. Both formats use it: chat-template rows (:mod:`training.sft`) and
Harmony conversations (:mod:`training.sft_harmony`) differ only in how an example becomes ids and a mask.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.learn.data import DataError

MARK_OPEN, MARK_CLOSE = "⟦", "⟧"
"""Trained spans in the rendered example (characters that maths traces practically never contain)."""
CUT_MARK = "✂[max_length]"


class AuditError(DataError):
    """The dataset, rendered by the chosen chat template, would not train what it should (see module doc)."""


# --- the audit's report -----------------------------------------------------------------------------


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


def trained_spans(mask: Sequence[int]) -> list[tuple[int, int]]:
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
    bounds = sorted({0, len(ids), *([cut] if cut else []), *(i for s in trained_spans(mask) for i in s)})
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


__all__ = ["CUT_MARK", "MARK_CLOSE", "MARK_OPEN", "Audit", "AuditError", "AuditSummary", "ExampleStats",
           "check_prepared_dataset", "conclude_audit", "echo_audit", "render_mask", "trained_spans", "write_audit"]
