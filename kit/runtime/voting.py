"""Aggregate sample answers and decide when a question is settled.

Pure functions over :class:`Vote` lists, so the solver, the simulator and offline evaluation all use the
same code. Abstentions (``answer=None``) count as finished samples but carry no weight.

Early stopping (:func:`decided`) answers "can we abort the samples still running?": either the leader
can no longer be overtaken even if every running sample voted for the runner-up (``certain``), or an
agreement rule from :class:`StopRules` fired. The default rules are the AIMO2 2nd-place team's (4 of the
first 4, 4 of the last 5, 5 of up to 7, 6 of up to 9 finished samples agree).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from kit.runtime.confidence import weight_of

TieBreak = Literal["larger", "smaller", "earliest", "latest", "shortest"]
ConfidenceKind = Literal["none", "mean", "tail"]
"""Which entropy of a vote is its confidence: none, the mean over its tokens, the mean over its tail."""
ScoreKind = Literal["weight", "composite"]
VoteKind = Literal["cot", "code_ok", "code_error"]
VOTE_KINDS: tuple[str, ...] = ("cot", "code_ok", "code_error")
"""What a vote's sample did, the one vocabulary of the solver, the selection strategies and
:attr:`Weighting.kind_weights`: no code (``cot``), code that all ran (``code_ok``), code that failed
at least once (``code_error``)."""


def vote_kind(code_calls: int, code_errors: int) -> VoteKind:
    """The :data:`VOTE_KINDS` entry of a sample with ``code_calls`` calls of which ``code_errors`` failed."""
    if code_calls <= 0:
        return "cot"
    return "code_error" if code_errors > 0 else "code_ok"


@dataclass(frozen=True)
class Vote:
    """One finished sample's answer.

    ``order`` is the finishing position (0 = first finished); ``tokens`` the sample's length.
    ``weight`` is the base weight (e.g. lower for an answer read from a sample cut by the deadline).
    ``entropy`` / ``entropy_tail``: the sample's mean token entropy over all / its last tokens
    (:mod:`kit.runtime.confidence`; None when the engine gave no log-probabilities).
    """

    answer: int | None
    weight: float = 1.0
    order: int = 0
    tokens: int = 0
    kind: VoteKind = "cot"
    entropy: float | None = None
    entropy_tail: float | None = None

    def confidence_entropy(self, which: ConfidenceKind) -> float | None:
        if which == "none":
            return None
        return self.entropy if which == "mean" else self.entropy_tail

    def __post_init__(self) -> None:
        if self.kind not in VOTE_KINDS:
            raise ValueError(f"vote kind must be one of {VOTE_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Weighting:
    """How a vote's weight is computed from the vote.

    ``small_answer_weight``: the AIMO2 2nd place's 0.6 for answers <= ``small_answer_max`` or multiples of
    ``round_multiple`` (guesses and degenerate answers are over-represented there).
    ``kind_weights``: per :data:`VOTE_KINDS` entry (e.g. ``{"code_ok": 1.5}``), multiplied into the base
    weight.
    ``confidence``: the AIMO3 winners' confidence weighting — with ``score="weight"`` each vote is also
    multiplied by ``1/max(H, 1e-9)`` of its mean (``mean``) or tail-window (``tail``) entropy.
    ``score="composite"``: answers are ranked by the AIMO3 2nd place's score instead of their summed weight,
    ``2.0·share + 0.3/median_H + 0.5·consensus`` (:func:`composite_scores`), with ``median_H`` over the
    ``confidence`` entropy (tail by default).
    """

    small_answer_weight: float = 1.0
    small_answer_max: int = 20
    round_multiple: int = 100
    kind_weights: dict[str, float] = field(default_factory=dict)
    confidence: ConfidenceKind = "none"
    score: ScoreKind = "weight"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kind_weights) - set(VOTE_KINDS))
        if unknown:
            raise ValueError(f"kind_weights: unknown vote kind(s) {unknown}; use {list(VOTE_KINDS)}")
        if self.confidence not in ("none", "mean", "tail"):
            raise ValueError(f"confidence must be none, mean or tail, got {self.confidence!r}")
        if self.score not in ("weight", "composite"):
            raise ValueError(f"score must be weight or composite, got {self.score!r}")

    def base(self) -> Weighting:
        """These weights without confidence: what a vote can add at most is then known (``certain``)."""
        return replace(self, confidence="none", score="weight")

    def weight(self, vote: Vote) -> float:
        """The vote's weight in the tally (the composite score's vote share counts these too, without the
        confidence factor: there the entropy enters through ``median_H``)."""
        if vote.answer is None:
            return 0.0
        w = vote.weight * self.kind_weights.get(vote.kind, 1.0)
        if self.confidence != "none" and self.score == "weight":
            w *= weight_of(vote.confidence_entropy(self.confidence))
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


COMPOSITE = (2.0, 0.3, 0.5)
"""Coefficients of the AIMO3 2nd place's score: vote share, inverse median entropy, consensus."""


def composite_scores(votes: Sequence[Vote], weighting: Weighting) -> dict[int, float]:
    """``2.0·share + 0.3/max(median_H, 1e-9) + 0.5·consensus`` per answer (docs/design.md "AIMO3").

    ``share``: the answer's weight over all answered votes' weight; ``median_H``: the median of its votes'
    ``weighting.confidence`` entropy (``tail`` when ``none``) — the term is 0 when none of its votes has
    one (an engine without log-probabilities: the score is then a vote share again); ``consensus``: 1 when
    the answer holds a strict majority of the weight (share > 1/2), else 0 — the write-up names the term
    without defining it, this is our reading.
    """
    which: ConfidenceKind = weighting.confidence if weighting.confidence != "none" else "tail"
    totals = tally(votes, weighting.base())
    total = sum(totals.values())
    if total <= 0:
        return {}
    a_share, a_entropy, a_consensus = COMPOSITE
    scores = {}
    for answer, w in totals.items():
        hs = [h for v in votes if v.answer == answer and (h := v.confidence_entropy(which)) is not None]
        share = w / total
        certainty = a_entropy * weight_of(statistics.median(hs)) if hs else 0.0
        scores[answer] = a_share * share + certainty + a_consensus * (share > 0.5)
    return scores


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
    if tie_break == "latest":  # the answer whose first vote came last: early finishers are worse (gpt-oss)
        firsts: dict[int, int] = {}
        for v in votes:
            if v.answer is not None:
                firsts.setdefault(v.answer, v.order)
        return lambda a: firsts[a]
    if tie_break == "shortest":
        shortest: dict[int, int] = {}
        for v in votes:
            if v.answer is not None:
                shortest[v.answer] = min(shortest.get(v.answer, v.tokens), v.tokens)
        return lambda a: -shortest[a]
    raise ValueError(f"unknown tie_break {tie_break!r}; use larger, smaller, earliest, latest or shortest")


def ranking(
    votes: Sequence[Vote], weighting: Weighting = PLAIN, tie_break: TieBreak = "larger"
) -> list[tuple[int, float]]:
    """Answers with their weights (or composite scores), best first; ties broken by ``tie_break``."""
    totals = composite_scores(votes, weighting) if weighting.score == "composite" else tally(votes, weighting)
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
    """First-finish quorum: settle as soon as this many samples have finished. For models whose short samples
    are right more often (R1-distill: correct AIME samples about half as long as wrong ones) the first few
    finishers outvote the long tail; for models whose first finishers are quick wrong guesses (gpt-oss-120b)
    it votes among the worst samples — a policy sets it only where it was measured to help
    (``kit.runtime.schedule.Ours.finish_signal``)."""
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
        # Entropy weights are unbounded and composite scores are not sums: "cannot be caught" is judged on
        # the weights without confidence, whose per-vote maximum is max_weight.
        ranked = ranking(votes, rules.weighting.base(), rules.tie_break)
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


class Ballot:
    """One problem's votes as its samples finish: the only place that turns votes into a stop and an answer.

    The solver and the competition simulator both vote through a ballot, so they cannot disagree on
    which answer a stop submits. The rule (docs/design.md "Voting"):

    * :meth:`check` after each finished sample asks :func:`decided`; the first decision that stops is kept;
    * :meth:`final` is the answer submitted: the stopping decision's answer when a rule stopped the problem
      (an agreement rule names the answer that agreed; ``certain``, ``quorum`` and ``hopeless`` name the
      weighted leader), otherwise — every sample finished, or the deadline cut them — the weighted leader
      of all votes, with the deadline's partial answers added by the caller.
    """

    def __init__(self, rules: StopRules) -> None:
        self.rules = rules
        self.votes: list[Vote] = []
        self.stopped: Decision | None = None

    def add(self, vote: Vote) -> None:
        self.votes.append(vote)

    def check(self, running: int) -> Decision:
        """Whether to stop now (``running`` samples still going); a stop is remembered for :meth:`final`."""
        d = decided(self.votes, running, self.rules)
        if d.stop and running > 0 and self.stopped is None:
            self.stopped = d
        return d

    def final(self, extra: Sequence[Vote] = ()) -> Decision:
        """The decision to submit (see the class docstring); ``extra`` votes count only without a stop."""
        if self.stopped is not None:
            return self.stopped
        return decided([*self.votes, *extra], 0, self.rules)

    def tally(self, extra: Sequence[Vote] = ()) -> dict[int, float]:
        return tally([*self.votes, *extra], self.rules.weighting)
