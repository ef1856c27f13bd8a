"""Aggregate sample answers and decide when a question is settled.

Pure functions over :class:`Vote` lists, so the solver, the simulator and offline evaluation all use the
same code. Abstentions (``answer=None``) count as finished samples but carry no weight.

Early stopping (:func:`decided`) answers "can we abort the samples still running?": either the leader
can no longer be overtaken even if every running sample voted for the runner-up (``certain``), or an
agreement rule from :class:`StopRules` fired. The default rules are the AIMO2 2nd-place team's (4 of the
first 4, 4 of the last 5, 5 of up to 7, 6 of up to 9 finished samples agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

TieBreak = Literal["larger", "smaller", "earliest", "shortest"]


@dataclass(frozen=True)
class Vote:
    """One finished sample's answer.

    ``order`` is the finishing position (0 = first finished); ``tokens`` the sample's length.
    ``weight`` is the base weight (e.g. higher for a code-verified answer).
    """

    answer: int | None
    weight: float = 1.0
    order: int = 0
    tokens: int = 0
    kind: str = "cot"


@dataclass(frozen=True)
class Weighting:
    """How a vote's weight is computed from the vote.

    ``small_answer_weight``: the AIMO2 2nd place's 0.6 for answers <= ``small_answer_max`` or multiples of
    ``round_multiple`` (guesses and degenerate answers are over-represented there).
    ``kind_weights``: per prompt kind (e.g. ``{"tir": 1.2}``), multiplied into the base weight.
    """

    small_answer_weight: float = 1.0
    small_answer_max: int = 20
    round_multiple: int = 100
    kind_weights: dict[str, float] = field(default_factory=dict)

    def weight(self, vote: Vote) -> float:
        if vote.answer is None:
            return 0.0
        w = vote.weight * self.kind_weights.get(vote.kind, 1.0)
        a = vote.answer
        if self.small_answer_weight != 1.0 and (
            a <= self.small_answer_max or (self.round_multiple and a % self.round_multiple == 0)
        ):
            w *= self.small_answer_weight
        return w


PLAIN = Weighting()
SECOND_PLACE_WEIGHTING = Weighting(small_answer_weight=0.6)


def tally(votes: Sequence[Vote], weighting: Weighting = PLAIN) -> dict[int, float]:
    """Total weight per answer (abstentions left out), in order of first appearance."""
    totals: dict[int, float] = {}
    for v in votes:
        if v.answer is None:
            continue
        totals[v.answer] = totals.get(v.answer, 0.0) + weighting.weight(v)
    return totals


def _tie_key(tie_break: TieBreak, votes: Sequence[Vote]) -> Callable[[int], float]:
    if tie_break == "larger":
        return lambda a: a
    if tie_break == "smaller":
        return lambda a: -a
    if tie_break == "earliest":
        first = {}
        for v in votes:
            if v.answer is not None:
                first.setdefault(v.answer, v.order)
        return lambda a: -first[a]
    if tie_break == "shortest":
        shortest: dict[int, int] = {}
        for v in votes:
            if v.answer is not None:
                shortest[v.answer] = min(shortest.get(v.answer, v.tokens), v.tokens)
        return lambda a: -shortest[a]
    raise ValueError(f"unknown tie_break {tie_break!r}; use larger, smaller, earliest or shortest")


def ranking(
    votes: Sequence[Vote], weighting: Weighting = PLAIN, tie_break: TieBreak = "larger"
) -> list[tuple[int, float]]:
    """Answers with their weights, best first; ties broken deterministically by ``tie_break``."""
    totals = tally(votes, weighting)
    key = _tie_key(tie_break, votes)
    # Round the weights so that float noise (0.6 + 0.6 vs 1.2) never decides a tie.
    return sorted(totals.items(), key=lambda item: (round(item[1], 9), key(item[0])), reverse=True)


def majority(
    votes: Sequence[Vote], weighting: Weighting = PLAIN, tie_break: TieBreak = "larger"
) -> int | None:
    """The winning answer, or None when every sample abstained."""
    ranked = ranking(votes, weighting, tie_break)
    return ranked[0][0] if ranked else None


@dataclass(frozen=True)
class Agreement:
    """An agreement rule over finished samples (counts are plain votes, abstentions included in windows).

    * ``scope="first"``: exactly ``window`` samples have finished and ``count`` of them agree.
    * ``scope="last"``: among the ``window`` most recently finished samples, ``count`` agree.
    * ``scope="upto"``: at most ``window`` samples have finished and the leader has ``count`` votes.
    * ``scope="any"``: the leader has ``count`` votes, whatever has finished.
    """

    count: int
    window: int
    scope: Literal["first", "last", "upto", "any"]

    def __post_init__(self) -> None:
        if self.count < 1 or self.window < 1:
            raise ValueError(f"agreement rule needs count >= 1 and window >= 1: {self}")
        if self.scope != "any" and self.count > self.window:
            raise ValueError(f"agreement rule can never fire (count > window): {self}")

    def describe(self) -> str:
        names = {"first": "of the first", "last": "of the last", "upto": "of at most", "any": "votes"}
        if self.scope == "any":
            return f"{self.count} votes"
        return f"{self.count} {names[self.scope]} {self.window}"

    def leader_if_met(self, finished: Sequence[Vote]) -> int | None:
        n = len(finished)
        if self.scope == "first":
            window = finished if n == self.window else None
        elif self.scope == "last":
            window = finished[-self.window :] if n >= self.window else None
        elif self.scope == "upto":
            window = finished if n <= self.window else None
        else:
            window = finished
        if window is None:
            return None
        counts: dict[int, int] = {}
        for v in window:
            if v.answer is not None:
                counts[v.answer] = counts.get(v.answer, 0) + 1
        for answer, c in counts.items():
            if c >= self.count:
                return answer
        return None


SECOND_PLACE_RULES: tuple[Agreement, ...] = (
    Agreement(4, 4, "first"),
    Agreement(4, 5, "last"),
    Agreement(5, 7, "upto"),
    Agreement(6, 9, "upto"),
)


@dataclass(frozen=True)
class StopRules:
    """When to stop a question early.

    ``certain``: stop once the weighted leader cannot be overtaken by the samples still running
    (each counted at ``max_weight``). ``min_finished``: never stop before this many samples finished.
    """

    agreements: tuple[Agreement, ...] = SECOND_PLACE_RULES
    certain: bool = True
    min_finished: int = 1
    max_weight: float = 1.0
    weighting: Weighting = PLAIN
    tie_break: TieBreak = "larger"
    quorum: int | None = None
    """First-finish quorum: settle as soon as this many samples have finished. Short samples finish
    first and are right more often (correct AIME samples are about half as long as wrong ones), so
    with many samples the first few finishers outvote the long tail."""
    hopeless_after: int | None = None
    """Give up once this many samples finished and no two agree: more samples rarely rescue such a
    question, and the time is worth more on the next one (the leader is returned)."""


@dataclass(frozen=True)
class Decision:
    stop: bool
    answer: int | None
    reason: str


def decided(votes: Sequence[Vote], running: int, rules: StopRules = StopRules()) -> Decision:
    """Whether the question is settled given the finished ``votes`` and ``running`` samples left.

    ``votes`` must be in finishing order. With ``running == 0`` the question is always settled
    (reason ``"all finished"``).
    """
    if running < 0:
        raise ValueError(f"running must be >= 0, got {running}")
    leader = majority(votes, rules.weighting, rules.tie_break)
    if running == 0:
        return Decision(True, leader, "all finished")
    if len(votes) < rules.min_finished or leader is None:
        return Decision(False, leader, "")
    if rules.certain:
        ranked = ranking(votes, rules.weighting, rules.tie_break)
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        if ranked[0][1] - runner_up > running * rules.max_weight + 1e-9:
            return Decision(True, leader, "certain")
    for rule in rules.agreements:
        answer = rule.leader_if_met(votes)
        if answer is not None:
            return Decision(True, answer, f"agreement: {rule.describe()}")
    if rules.quorum is not None and len(votes) >= rules.quorum:
        return Decision(True, leader, f"quorum: first {rules.quorum} finished")
    if rules.hopeless_after is not None and len(votes) >= rules.hopeless_after:
        answered = [v.answer for v in votes if v.answer is not None]
        if len(set(answered)) == len(answered):
            return Decision(True, leader, "hopeless: no two samples agree")
    return Decision(False, leader, "")
