"""Reward functions: hand-computed values, published formulas, group edge cases, trl's call shape."""

from __future__ import annotations

import math

import pytest

from kit.learn.rewards import (
    REWARDS,
    accuracy_reward,
    cosine_value,
    efficiency_values,
    format_reward,
    get_reward,
    kimi_length_reward,
    kimi_values,
    make_cosine,
    make_efficiency,
)

RIGHT = r"<think>so 6*7</think> The answer is \boxed{42}."
WRONG = r"<think>hmm</think> \boxed{41}"


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_accuracy_and_trl_call_shapes() -> None:
    plain = accuracy_reward([RIGHT, WRONG, "no answer"], answer=["42", "42", "42"])
    assert plain == [1.0, 0.0, 0.0]
    chat = accuracy_reward([conv(RIGHT), conv(WRONG)], prompts=[[{"role": "user", "content": "q"}]] * 2,
                           answer=["42", "42"], completion_ids=[[1, 2], [3]])
    assert chat == [1.0, 0.0]
    assert accuracy_reward([r"\boxed{\frac{1}{2}}"], answer=["0.5"]) == [1.0]
    with pytest.raises(ValueError, match="'answer'"):
        accuracy_reward([RIGHT])
    with pytest.raises(ValueError, match="entries"):
        accuracy_reward([RIGHT, WRONG], answer=["42"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"<think>x \boxed{5} y</think> done", 1.0),
        (r"\boxed{5}</think>", 1.0),
        (r"<think>x</think> \boxed{5}", 0.0),  # box only after </think>
        (r"<think>\boxed{5} never closed", 0.0),
        ("no box at all </think>", 0.0),
    ],
)
def test_format_reward(text: str, expected: float) -> None:
    assert format_reward([text]) == [expected]


# (length, correct, max_len, expected) — r = lo + 0.5 (hi - lo)(1 + cos(pi * min(len/max, 1)))
COSINE_TABLE = [
    (0, True, 1000, 1.0),  # shortest correct: hi
    (1000, True, 1000, 0.1),  # at max_len: lo
    (5000, True, 1000, 0.1),  # beyond: clipped
    (500, True, 1000, 0.55),  # midpoint: (0.1 + 1.0) / 2
    (0, False, 1000, -1.0),  # short wrong: strongest penalty
    (1000, False, 1000, -0.1),  # long wrong: mildest penalty
    (500, False, 1000, -0.55),
    (250, True, 1000, 0.1 + 0.45 * (1 + math.cos(math.pi / 4))),
]


@pytest.mark.parametrize(("length", "correct", "max_len", "expected"), COSINE_TABLE)
def test_cosine_formula(length: int, correct: bool, max_len: int, expected: float) -> None:
    assert cosine_value(length, correct, max_len) == pytest.approx(expected)


def test_cosine_reward_uses_token_counts_when_given() -> None:
    fn = make_cosine(max_len=10)
    r = fn([RIGHT, RIGHT], answer=["42", "42"], completion_ids=[[0] * 0, [0] * 10])
    assert r == pytest.approx([1.0, 0.1])
    chars = fn([RIGHT], answer=["42"])  # no ids: characters (len(RIGHT) > 10 → clipped)
    assert chars == pytest.approx([0.1])
    with pytest.raises(ValueError, match="max_len"):
        make_cosine(max_len=0)


# Kimi k1.5: lambda = 0.5 - (len - min) / (max - min); correct -> lambda; wrong -> min(0, lambda)
KIMI_TABLE = [
    ([100, 200, 300], [True, True, True], [0.5, 0.0, -0.5]),
    ([100, 200, 300], [False, False, False], [0.0, 0.0, -0.5]),
    ([100, 200, 300], [True, False, True], [0.5, 0.0, -0.5]),
    ([300, 100, 150], [False, True, False], [-0.5, 0.5, 0.0]),
    ([200, 200, 200], [True, False, True], [0.0, 0.0, 0.0]),  # all equal -> 0
    ([123], [True], [0.0]),  # one sample
]


@pytest.mark.parametrize(("lengths", "correct", "expected"), KIMI_TABLE)
def test_kimi_formula(lengths, correct, expected) -> None:
    assert kimi_values(lengths, correct) == pytest.approx(expected)


def test_kimi_groups_by_prompt() -> None:
    completions = [RIGHT, RIGHT, WRONG, RIGHT]
    prompts = ["p1", "p1", "p2", "p2"]
    ids = [[0] * 10, [0] * 30, [0] * 10, [0] * 20]
    r = kimi_length_reward(completions, prompts=prompts, completion_ids=ids, answer=["42"] * 4)
    # p1: lengths 10, 30 both right -> 0.5, -0.5 ; p2: 10 wrong (lambda 0.5 -> min(0, .5) = 0), 20 right -> -0.5
    assert r == pytest.approx([0.5, -0.5, 0.0, -0.5])


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_efficiency_formula_hand_computed() -> None:
    alpha = 0.2
    # correct lengths 100, 300 -> mean 200, std 100 (population); wrong -> 0
    vals = efficiency_values([100, 300, 50], [True, True, False], alpha)
    assert vals == pytest.approx([1 - alpha * sigmoid(-1.0), 1 - alpha * sigmoid(1.0), 0.0])
    assert vals[0] > vals[1]  # shorter correct beats longer correct


@pytest.mark.parametrize(
    ("lengths", "correct", "expected"),
    [
        ([100, 200, 300], [False, False, False], [0.0, 0.0, 0.0]),  # all wrong
        ([200, 200], [True, True], [0.95, 0.95]),  # all correct, equal lengths: z = 0 -> 1 - a/2
        ([200], [True], [0.95]),  # one sample
        ([100, 999], [True, False], [0.95, 0.0]),  # one correct: z = 0
    ],
)
def test_efficiency_edge_cases(lengths, correct, expected) -> None:
    assert efficiency_values(lengths, correct, alpha=0.1) == pytest.approx(expected)


def test_efficiency_reward_groups_and_alpha() -> None:
    fn = make_efficiency(alpha=0.4)
    r = fn([RIGHT, RIGHT, RIGHT, WRONG], prompts=["a", "a", "b", "b"],
           completion_ids=[[0] * 10, [0] * 30, [0] * 5, [0] * 1], answer=["42"] * 4)
    assert r == pytest.approx([1 - 0.4 * sigmoid(-1), 1 - 0.4 * sigmoid(1), 1 - 0.4 * 0.5, 0.0])
    with pytest.raises(ValueError, match="alpha"):
        make_efficiency(alpha=2.0)


def test_registry() -> None:
    assert set(REWARDS) == {"accuracy", "format", "cosine", "kimi_length", "efficiency"}
    assert get_reward("accuracy") is accuracy_reward
    fn = get_reward("efficiency", alpha=0.3)
    assert fn.__name__ == "efficiency_reward"
    assert fn([RIGHT], answer=["42"]) == pytest.approx([1 - 0.3 * 0.5])
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward("vibes")
    with pytest.raises(ValueError, match="takes no parameters"):
        get_reward("format", alpha=1)
    for name, fn in REWARDS.items():
        assert fn.__name__.endswith("_reward"), name
