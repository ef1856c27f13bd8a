"""Write Harmony token logs and attempt tables in the shapes real gpt-oss-120b output has, for tests, the
replay dry-run and benchmarks (no real log leaves the machines it was recorded on).

The shapes are the measured ones (docs/design.md "AIMO3"): attempts that think in the analysis channel,
call the python tool (some calls fail with a traceback), and end in one of the ways real attempts end —
at a box streamed in the analysis channel without ``<|return|>`` (about two thirds: the harness stopped
there), with a ``final`` message that boxes the answer, with a ``final`` that writes it bare (about one in
five finals: ``41754``, ``\\displaystyle 41754``, ``\\(\\displaystyle 41754\\)``, ``**41754**``), or cut
mid-thought by the token limit. Every attempt's ids are rendered by openai-harmony itself
(:func:`kit.runtime.protocols.harmony.completion_ids`, :func:`~kit.runtime.protocols.harmony.tool_message`),
as AIMO3 harnesses save them. What a generated log *says* (which answers, how long) is synthetic: it proves
that a path reads and replays real shapes, not that a rule is right.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kit.runtime.protocols.harmony import assistant_header_ids, completion_ids, harmony_encoding, tool_message

_WORDS = ("we", "count", "the", "pairs", "so", "modulo", "prime", "sum", "each", "case", "then", "divides",
          "term", "bound", "factor", "check", "parity", "residue", "thus", "square", "odd", "even", "index")
"""Filler reasoning: one token per word, never a repeated paragraph (the solver stops looping samples)."""
BARE_FORMS = ("{}", "\\displaystyle {}", "\\(\\displaystyle {}\\)", "**{}**")
"""How real gpt-oss finals write an answer without a box."""


@dataclass(frozen=True)
class LogShape:
    """What a generated log looks like."""

    problems: int = 6
    attempts: int = 8
    accuracy: tuple[float, float] = (1.6, 0.7)
    """Beta parameters of each problem's chance that an attempt is right."""
    median_tokens: int = 300
    """Median attempt length (tokens of filler analysis; a real log's is ~30k)."""
    length_sigma: float = 0.5
    analysis_box_share: float = 2 / 3
    bare_final_share: float = 0.2
    cut_share: float = 0.05
    """Attempts cut mid-thought (no answer)."""
    max_calls: int = 2
    error_share: float = 0.3
    """Share of tool calls that fail with a traceback."""
    answer_range: int = 100_000
    seed: int = 0


def _attempt(rng: random.Random, answer: int, tokens: int, shape: LogShape) -> tuple[list[int], str, int, int]:
    """(completion ids, how it ends, python calls, failed calls) of one attempt: each turn rendered as the
    model writes it after ``<|start|>assistant``, each tool answer as the harness appends it."""
    from openai_harmony import Message, Role

    enc = harmony_encoding()

    def analysis(text: str) -> Message:
        return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("analysis")

    ids: list[int] = []
    calls = errors = 0
    for k in range(rng.randint(0, shape.max_calls)):
        code = f"n = {rng.randint(2, 99)}\nprint(sum(i * i for i in range(n)) % {shape.answer_range})"
        call = analysis(code).with_recipient("python").with_content_type("code")
        ids += completion_ids([analysis(f"Let me check case {k} ({rng.choice(_WORDS)} {rng.randint(2, 10**6)}) with the tool."),
                               call])
        failed = rng.random() < shape.error_share
        out = ("Traceback (most recent call last):\n  File \"<stdin>\", line 2\nNameError: name 'm' is not defined"
               if failed else str(rng.randint(0, 10**6)))
        ids += list(enc.render(tool_message(out))) + list(assistant_header_ids())
        calls += 1
        errors += failed
    filler = "".join(" " + rng.choice(_WORDS) for _ in range(max(tokens - len(ids) - 20, 1)))
    u = rng.random()
    if u < shape.cut_share:
        end, body = "cut", [analysis("We keep going." + filler)]
    elif u < shape.cut_share + (1 - shape.cut_share) * shape.analysis_box_share:
        end, body = "analysis_box", [analysis("Let me reason." + filler + f" So the answer is \\boxed{{{answer}}}")]
    else:
        bare = rng.random() < shape.bare_final_share
        text = rng.choice(BARE_FORMS).format(answer) if bare else f"The answer is \\boxed{{{answer}}}."
        end = "bare_final" if bare else "boxed_final"
        body = [analysis("Let me reason." + filler),
                Message.from_role_and_content(Role.ASSISTANT, text).with_channel("final")]
    ids += completion_ids(body)
    if end in ("cut", "analysis_box"):
        ids = ids[:-1]  # no <|end|>: the harness stopped at the box, or the token limit cut the thought
    return ids, end, calls, errors


def harmony_log(shape: LogShape = LogShape(), problems: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Rows of a Harmony token log: ``problem_id``, ``problem``, ``gold``, ``completion_ids`` and what a
    harness also logs (``seconds``, ``entropy_mean``, ``entropy_tail``), plus ``end`` (how the attempt ended)
    and ``python_calls``/``python_errors`` for the tests' own checks. ``problems`` (id, text) names the
    problems (default: synthetic statements)."""
    rng = random.Random(shape.seed)
    chosen = list(problems) if problems is not None else [
        (f"log{k}", f"Problem {k}: find the number of lattice points with property P{k}.") for k in range(shape.problems)]
    rows = []
    for pid, text in chosen:
        p = rng.betavariate(*shape.accuracy)
        gold = rng.randrange(shape.answer_range)
        distractor = (gold + rng.randrange(1, shape.answer_range)) % shape.answer_range
        for _ in range(shape.attempts):
            answer = gold if rng.random() < p else (distractor if rng.random() < 0.5 else rng.randrange(shape.answer_range))
            tokens = max(40, int(rng.lognormvariate(math.log(shape.median_tokens), shape.length_sigma)))
            ids, end, calls, errors = _attempt(rng, answer, tokens, shape)
            entropy = round(rng.uniform(0.2, 1.2) * (0.7 if answer == gold else 1.0), 4)
            rows.append({"problem_id": pid, "problem": text, "gold": gold, "completion_ids": ids,
                         "seconds": round(len(ids) / 110.0, 2), "entropy_mean": entropy,
                         "entropy_tail": round(entropy * 0.8, 4), "end": end, "answer": None if end == "cut" else answer,
                         "python_calls": calls, "python_errors": errors})
    return rows


def write_harmony_log(path: str | Path, rows: Sequence[dict]) -> Path:
    """The rows as a jsonl token log (the tests' extra fields left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("problem_id", "problem", "gold", "completion_ids", "seconds", "entropy_mean", "entropy_tail")
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({k: r[k] for k in keep}) + "\n")
    return path




def write_attempt_table(path: str | Path, rows: Sequence[dict], rename: dict[str, str] | None = None) -> Path:
    """The rows as an attempt table (``.csv`` or ``.parquet`` by the suffix), one attempt a row, the answer as
    the harness read it and its verdict (``correct``); ``rename`` gives columns other names (as other
    harnesses call them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rename = rename or {}
    table = [{rename.get(c, c): v for c, v in (
        ("problem_id", r["problem_id"]), ("answer", r["answer"]), ("gold", r["gold"]),
        ("tokens", len(r["completion_ids"])), ("seconds", r["seconds"]), ("problem", r["problem"]),
        ("entropy", r["entropy_mean"]), ("python_calls", r["python_calls"]), ("python_errors", r["python_errors"]),
        ("correct", r["answer"] == r["gold"]))}
        for r in rows]
    if path.suffix == ".parquet":
        pl.DataFrame(table).write_parquet(path)
    else:
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    return path
