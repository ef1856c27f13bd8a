"""Read recorded model outputs (trace files) into one sample type.

Layouts understood, detected per line:

* Qwen2.5-Math evaluation harness (SkyThought, ToRA): ``{"idx", "question", "gt", "code": [texts],
  "pred": [answers], "score": [bools]?}`` — one line per problem, one list entry per sample.
* NeMo-Skills: ``{"id", "problem", "expected_answer", "generation", "predicted_answer",
  "symbolic_correct"}`` — one line per sample.

Files may be ``.jsonl`` or ``.jsonl.gz``. Bad lines raise :class:`TraceFormatError` naming the file and
line, since a silently skipped line would bias every metric computed from the traces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kit.runtime.jsonl import json_lines
from kit.runtime.resources import resource_path

BUNDLED_POOLS = {
    "skythought_aime24": "skythought_32b_aime24",
    "tora_gsm8k": "tora_gsm8k",
    "nemoskills": "nemoskills_fixture",
}


class TraceFormatError(ValueError):
    """A trace file line that matches none of the known layouts."""


@dataclass(frozen=True)
class RecordedSample:
    source: str
    """File name the sample came from (e.g. ``checkpoint-21.jsonl.gz``)."""
    problem_id: str
    problem: str
    gold: str
    text: str
    recorded_pred: str | None
    recorded_correct: bool | None
    """The harness's own verdict, when the file has one."""


def _from_line(obj: dict, source: str, where: str) -> Iterator[RecordedSample]:
    if "code" in obj and "gt" in obj:
        texts = obj["code"]
        preds = obj.get("pred") or [None] * len(texts)
        scores = obj.get("score") or [None] * len(texts)
        if not isinstance(texts, list) or len(preds) != len(texts) or len(scores) != len(texts):
            raise TraceFormatError(f"{where}: 'code', 'pred' and 'score' must be lists of equal length")
        for text, pred, score in zip(texts, preds, scores, strict=True):
            yield RecordedSample(
                source=source,
                problem_id=str(obj.get("idx", obj.get("id", ""))),
                problem=str(obj.get("question", obj.get("problem", ""))),
                gold=str(obj["gt"]),
                text=str(text),
                recorded_pred=None if pred is None else str(pred),
                recorded_correct=score,
            )
    elif "generation" in obj and "expected_answer" in obj:
        pred = obj.get("predicted_answer")
        yield RecordedSample(
            source=source,
            problem_id=str(obj.get("id", "")),
            problem=str(obj.get("problem", "")),
            gold=str(obj["expected_answer"]),
            text=str(obj["generation"]),
            recorded_pred=None if pred is None else str(pred),
            recorded_correct=obj.get("symbolic_correct"),
        )
    else:
        keys = ", ".join(sorted(obj)[:12])
        raise TraceFormatError(
            f"{where}: unknown trace layout (keys: {keys}); expected Qwen-harness "
            "('code', 'gt') or NeMo-Skills ('generation', 'expected_answer')"
        )


def load_samples(path: str | Path) -> list[RecordedSample]:
    """All samples of one trace file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace file not found: {path}")
    samples: list[RecordedSample] = []
    for lineno, obj in json_lines(path, TraceFormatError):
        samples.extend(_from_line(obj, path.name, f"{path}:{lineno}"))
    return samples


def trace_files(pool: str | Path) -> list[Path]:
    """Trace files of a bundled pool name (see ``BUNDLED_POOLS``), a folder, or a single file."""
    if isinstance(pool, str) and pool in BUNDLED_POOLS:
        folder = resource_path("traces", BUNDLED_POOLS[pool])
    else:
        folder = Path(pool)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"trace pool {pool!r}: no such bundled pool ({sorted(BUNDLED_POOLS)}) or path")
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
    if not files:
        raise FileNotFoundError(f"trace pool {folder}: no .jsonl or .jsonl.gz files")
    return files


def load_pool(pool: str | Path) -> list[RecordedSample]:
    """All samples of every file of a pool."""
    return [s for path in trace_files(pool) for s in load_samples(path)]
