"""GRPO reward functions in trl's signature, correct to the published formulas (docs/design.md "Training formulas").

trl calls each reward function as ``f(completions=..., prompts=..., completion_ids=..., **columns)``
where ``completions`` are strings or conversational message lists, dataset columns (e.g. ``answer``)
arrive as keyword lists, and completions of the same prompt sit in one batch (``num_generations`` per
prompt). Group rewards (Kimi, efficiency) group by prompt. Lengths are measured in tokens
(``completion_ids``) by default; without ids they fall back to characters (the open-r1/Fast-Math
constants were tuned on characters).

* ``accuracy`` — 1 if the extracted answer grades equal to ``answer`` (math-verify, time-limited).
* ``format`` — 1 if a ``\\boxed{…}`` occurs before ``</think>`` (Fast-Math regex), so inference can stop
  at ``</think>``.
* ``cosine`` — open-r1 / Fast-Math cosine length reward: progress p = min(len/max_len, 1),
  c = cos(πp); correct: lo=0.1, hi=1.0; wrong: lo=−0.1, hi=−1.0; r = lo + ½(hi − lo)(1 + c).
* ``kimi_length`` — Kimi k1.5: in a prompt's group λ = ½ − (len − min)/(max − min); correct → λ,
  wrong → min(0, λ); all lengths equal → 0.
* ``efficiency`` — Arora & Zanette: r = 1{correct}·(1 − α·σ((len − mean_c)/std_c)), mean/std over the
  group's *correct* samples (z = 0 when fewer than two correct or std = 0). Train it with RLOO-style
  advantages and **no** std normalisation (``training.grpo`` sets that), or α stops mattering.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from kit.runtime.answers import extract_answer, grade

RewardFn = Callable[..., list[float]]

FORMAT_PATTERN = re.compile(r"^.*?oxed{(.*?)}.*?</think>.*?$", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of a completion in trl's plain (str) or conversational (list of messages) form."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in completion)
    return "" if completion is None else str(completion)


def _lengths(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None) -> list[int]:
    if completion_ids is not None:
        if len(completion_ids) != len(completions):
            raise ValueError(f"completion_ids has {len(completion_ids)} rows for {len(completions)} completions")
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c)) for c in completions]


def _answers(kwargs: dict, n: int) -> list[Any]:
    answers = kwargs.get("answer")
    if answers is None:
        raise ValueError("reward needs the dataset column 'answer' (trl passes dataset columns as keyword lists)")
    if isinstance(answers, (str, int)):
        answers = [answers] * n
    if len(answers) != n:
        raise ValueError(f"'answer' has {len(answers)} entries for {n} completions")
    return list(answers)


@lru_cache(maxsize=65536)
def _graded(text: str, answer: str) -> bool:
    return grade(extract_answer(text), answer)


def correctness(completions: Sequence[Any], answers: Sequence[Any]) -> list[bool]:
    return [_graded(completion_text(c), str(a)) for c, a in zip(completions, answers, strict=True)]


def _groups(prompts: Sequence[Any] | None, n: int) -> list[list[int]]:
    """Indices grouped by prompt (consecutive equal prompts, as trl lays them out); no prompts → one group."""
    if prompts is None:
        return [list(range(n))]
    keys = [repr(p) for p in prompts]
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())


# --- the rewards ---------------------------------------------------------------------------------


def accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    answers = _answers(kwargs, len(completions))
    return [1.0 if ok else 0.0 for ok in correctness(completions, answers)]


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    return [1.0 if FORMAT_PATTERN.match(completion_text(c)) else 0.0 for c in completions]


def cosine_value(length: int, correct: bool, max_len: int, *, correct_lo: float = 0.1, correct_hi: float = 1.0,
                 wrong_lo: float = -0.1, wrong_hi: float = -1.0) -> float:
    """The cosine length reward of one completion (see module docstring)."""
    progress = min(length / max_len, 1.0)
    c = math.cos(math.pi * progress)
    lo, hi = (correct_lo, correct_hi) if correct else (wrong_lo, wrong_hi)
    return lo + 0.5 * (hi - lo) * (1.0 + c)


def make_cosine(max_len: int = 30_000, **constants: float) -> RewardFn:
    if max_len <= 0:
        raise ValueError(f"cosine reward max_len must be > 0, got {max_len}")

    def cosine_reward(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                      **kwargs: Any) -> list[float]:
        answers = _answers(kwargs, len(completions))
        oks = correctness(completions, answers)
        return [cosine_value(n, ok, max_len, **constants)
                for n, ok in zip(_lengths(completions, completion_ids), oks, strict=True)]

    return cosine_reward


def kimi_values(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """Kimi k1.5 length reward of one prompt's group."""
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    out = []
    for n, ok in zip(lengths, correct, strict=True):
        lam = 0.5 - (n - lo) / (hi - lo)
        out.append(lam if ok else min(0.0, lam))
    return out


def _group_reward(values: Callable[[list[int], list[bool]], list[float]], completions: Sequence[Any],
                  prompts: Sequence[Any] | None, completion_ids: Sequence[Sequence[int]] | None,
                  kwargs: dict) -> list[float]:
    """Apply a per-group formula ``values(lengths, correct)`` to every prompt's group of completions."""
    answers = _answers(kwargs, len(completions))
    oks = correctness(completions, answers)
    lengths = _lengths(completions, completion_ids)
    out = [0.0] * len(completions)
    for idx in _groups(prompts, len(completions)):
        for i, v in zip(idx, values([lengths[i] for i in idx], [oks[i] for i in idx]), strict=True):
            out[i] = v
    return out


def kimi_length_reward(completions: Sequence[Any], prompts: Sequence[Any] | None = None,
                       completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float]:
    return _group_reward(kimi_values, completions, prompts, completion_ids, kwargs)


def efficiency_values(lengths: Sequence[int], correct: Sequence[bool], alpha: float) -> list[float]:
    """Arora & Zanette length-penalised correctness of one prompt's group."""
    good = [n for n, ok in zip(lengths, correct, strict=True) if ok]
    mean = sum(good) / len(good) if good else 0.0
    std = math.sqrt(sum((n - mean) ** 2 for n in good) / len(good)) if len(good) > 1 else 0.0
    out = []
    for n, ok in zip(lengths, correct, strict=True):
        if not ok:
            out.append(0.0)
            continue
        z = (n - mean) / std if std > 0 else 0.0
        out.append(1.0 - alpha / (1.0 + math.exp(-z)))
    return out


def make_efficiency(alpha: float = 0.1) -> RewardFn:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"efficiency alpha must be in [0, 1], got {alpha}")

    def efficiency_reward(completions: Sequence[Any], prompts: Sequence[Any] | None = None,
                          completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float]:
        return _group_reward(lambda n, ok: efficiency_values(n, ok, alpha), completions, prompts,
                             completion_ids, kwargs)

    return efficiency_reward


cosine_reward = make_cosine()
efficiency_reward = make_efficiency()

REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "cosine": cosine_reward,
    "kimi_length": kimi_length_reward,
    "efficiency": efficiency_reward,
}
FACTORIES: dict[str, Callable[..., RewardFn]] = {"cosine": make_cosine, "efficiency": make_efficiency}


def get_reward(name: str, **params: Any) -> RewardFn:
    """A registered reward; ``params`` go to its factory (e.g. ``get_reward("efficiency", alpha=0.2)``)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)}")
    if params:
        if name not in FACTORIES:
            raise ValueError(f"reward {name!r} takes no parameters (got {sorted(params)})")
        fn = FACTORIES[name](**params)
        fn.__name__ = f"{name}_reward"
        return fn
    return REWARDS[name]
