"""Voting and early-stop decisions: table-driven."""

from __future__ import annotations

import pytest

from kit.runtime.voting import (
    PLAIN,
    SECOND_PLACE_RULES,
    SECOND_PLACE_WEIGHTING,
    Agreement,
    StopRules,
    Vote,
    Weighting,
    decided,
    majority,
    ranking,
    tally,
    vote_kind,
)


def votes(*answers: int | None, tokens: list[int] | None = None) -> list[Vote]:
    return [Vote(a, order=i, tokens=(tokens[i] if tokens else 100)) for i, a in enumerate(answers)]


@pytest.mark.parametrize(
    ("answers", "tie_break", "expected"),
    [
        ((1, 2, 2), "larger", 2),
        ((5, 3, 5, 3), "larger", 5),
        ((5, 3, 5, 3), "smaller", 3),
        ((3, 5, 5, 3), "earliest", 3),
        ((5, 3, 3, 5), "earliest", 5),
        ((None, None), "larger", None),
        ((), "larger", None),
        ((None, 7, None), "larger", 7),
        ((None, 7, 8, None, 8), "larger", 8),
    ],
)
def test_majority(answers, tie_break, expected) -> None:
    assert majority(votes(*answers), tie_break=tie_break) == expected


def test_shortest_tie_break_uses_the_shortest_sample() -> None:
    v = votes(10, 20, 10, 20, tokens=[900, 500, 800, 700])
    assert majority(v, tie_break="shortest") == 20
    v = votes(10, 20, 10, 20, tokens=[400, 500, 800, 700])
    assert majority(v, tie_break="shortest") == 10


def test_unknown_tie_break_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tie_break"):
        majority(votes(1, 2), tie_break="random")  # type: ignore[arg-type]


def test_second_place_weighting_discounts_small_and_round_answers() -> None:
    w = SECOND_PLACE_WEIGHTING
    assert w.weight(Vote(7)) == pytest.approx(0.6)
    assert w.weight(Vote(20)) == pytest.approx(0.6)
    assert w.weight(Vote(21)) == pytest.approx(1.0)
    assert w.weight(Vote(300)) == pytest.approx(0.6)
    assert w.weight(Vote(0)) == pytest.approx(0.6)
    assert w.weight(Vote(None)) == 0.0
    # two votes for 100 (1.2) lose to two votes for 173 (2.0); plain voting ties and takes the larger
    v = votes(100, 173, 100, 173)
    assert majority(v, PLAIN) == 173
    v = votes(100, 100, 100, 173, 173)
    assert majority(v, PLAIN) == 100
    assert majority(v, w) == 173  # 1.8 < 2.0


def test_per_sample_and_per_kind_weights() -> None:
    code_verified = [Vote(12, weight=2.0), Vote(30), Vote(30)]
    assert tally(code_verified) == {12: 2.0, 30: 2.0}
    assert majority(code_verified) == 30
    assert majority(code_verified, tie_break="smaller") == 12
    by_kind = Weighting(kind_weights={"code_ok": 1.5})
    v = [Vote(12, kind="code_ok"), Vote(30), Vote(12, kind="code_ok"), Vote(30), Vote(30)]
    assert tally(v, by_kind) == {12: 3.0, 30: 3.0}
    assert majority(v, by_kind, tie_break="earliest") == 12


def test_one_vote_kind_vocabulary() -> None:
    assert [vote_kind(0, 0), vote_kind(2, 0), vote_kind(2, 1)] == ["cot", "code_ok", "code_error"]
    with pytest.raises(ValueError, match="vote kind"):
        Vote(1, kind="tir")  # a prompt kind is not a vote kind
    with pytest.raises(ValueError, match="unknown vote kind"):
        Weighting(kind_weights={"tir": 1.5})


def test_float_noise_never_decides_a_tie() -> None:
    w = Weighting(small_answer_weight=0.1, small_answer_max=5, round_multiple=0)
    v = [Vote(1)] * 3 + [Vote(2)] * 3  # 0.1+0.1+0.1 vs 0.30000000000000004 style sums
    assert ranking(v, w, "larger")[0][0] == 2
    assert ranking(v, w, "smaller")[0][0] == 1


# (finished answers in finishing order, running, expected stop, expected answer, reason prefix)
SECOND_PLACE_TABLE = [
    ((7, 7, 7, 7), 11, True, 7, "agreement: 4 of the first 4"),
    ((7, 7, 7), 12, False, 7, ""),
    ((7, 7, 7, 8), 11, False, 7, ""),
    ((8, 7, 7, 7, 7), 10, True, 7, "agreement: 4 of the last 5"),
    ((8, 9, 7, 7, 7, 7), 9, True, 7, "agreement: 4 of the last 5"),
    ((7, 8, 7, 9, 7, 7), 9, False, 7, ""),
    ((7, 7, 7, 8, 9, 7, 7), 8, True, 7, "agreement: 5 of at most 7"),
    ((7, 8, 7, 9, 7, 6, 7), 8, False, 7, ""),
    ((7, 8, 9, 7, 6, 7, 5, 7), 7, False, 7, ""),
    ((7, 7, 7, 8, 7, 9, 7, 6, 7), 6, True, 7, "agreement: 6 of at most 9"),
    ((7, 8, 9, 7, 6, 7, 5, 7, 7), 6, False, 7, ""),
    ((7, 8, 9, 7, 6, 7, 5, 7, 4, 7), 5, False, 7, ""),
    ((None, None, None, None), 11, False, None, ""),
    ((None, 7, 7, 7, 7), 10, True, 7, "agreement: 4 of the last 5"),
    ((1, 2, 3), 0, True, 3, "all finished"),
    ((), 0, True, None, "all finished"),
]


@pytest.mark.parametrize(("answers", "running", "stop", "answer", "reason"), SECOND_PLACE_TABLE)
def test_second_place_rules(answers, running, stop, answer, reason) -> None:
    d = decided(votes(*answers), running, StopRules(agreements=SECOND_PLACE_RULES, certain=False))
    assert (d.stop, d.answer) == (stop, answer)
    assert d.reason.startswith(reason)


@pytest.mark.parametrize(
    ("answers", "running", "stop"),
    [
        ((5, 5, 5), 2, True),  # 3 vs 0 with 2 left: cannot be overtaken
        ((5, 5, 5), 3, False),  # 3 vs 0 with 3 left: could tie
        ((5, 5, 6), 0, True),
        ((5, 5, 6), 1, False),  # 2 vs 1 + 1 running: could tie
        ((5, 5, 5, 6), 1, True),
        ((None, None), 1, False),
    ],
)
def test_certain_leader(answers, running, stop) -> None:
    d = decided(votes(*answers), running, StopRules(agreements=(), certain=True))
    assert d.stop is stop
    if stop and running:
        assert d.reason == "certain"


def test_min_finished_holds_back_early_stop() -> None:
    rules = StopRules(agreements=(Agreement(2, 2, "any"),), certain=False, min_finished=3)
    assert not decided(votes(4, 4), 5, rules).stop
    assert decided(votes(4, 4, 1), 5, rules).stop


def test_invalid_rules_are_rejected() -> None:
    with pytest.raises(ValueError):
        Agreement(5, 4, "first")
    with pytest.raises(ValueError):
        Agreement(0, 4, "last")
    with pytest.raises(ValueError):
        decided(votes(1), -1)


def test_hopeless_rule_gives_up_only_when_no_two_agree() -> None:
    rules = StopRules(agreements=(), certain=False, hopeless_after=4)
    assert not decided(votes(1, 2, 3), 8, rules).stop
    d = decided(votes(1, 2, 3, 4), 8, rules)
    assert d.stop and d.reason.startswith("hopeless") and d.answer == 4
    assert not decided(votes(1, 2, 3, 1), 8, rules).stop
    d = decided(votes(None, 2, None, 5), 8, rules)
    assert d.stop
    assert not decided(votes(1, 2, 3, 4), 8, StopRules(agreements=(), certain=False)).stop


# --- confidence: the AIMO3 votes, on hand-computed cases -------------------------------------------------


def hv(answer: int | None, entropy: float | None = None, tail: float | None = None, order: int = 0) -> Vote:
    return Vote(answer, order=order, entropy=entropy, entropy_tail=tail)


def test_entropy_weighted_vote_is_one_over_the_mean_entropy() -> None:
    vs = [hv(7, 0.5, order=0), hv(7, 1.0, order=1), hv(9, 0.1, order=2)]
    w = Weighting(confidence="mean")
    assert tally(vs, w) == pytest.approx({7: 1 / 0.5 + 1 / 1.0, 9: 1 / 0.1})  # 3 vs 10
    assert majority(vs, w) == 9 and majority(vs) == 7
    assert tally([hv(4, 0.0)], w) == pytest.approx({4: 1e9})  # the 1e-9 floor: certain, not infinite
    assert tally([hv(4, None)], w) == {4: 1.0}  # no log-probabilities: a plain vote


def test_tail_window_vote_uses_the_tail_entropy() -> None:
    vs = [hv(7, entropy=0.1, tail=2.0), hv(9, entropy=1.0, tail=0.25)]
    assert majority(vs, Weighting(confidence="mean")) == 7
    assert majority(vs, Weighting(confidence="tail")) == 9
    assert tally(vs, Weighting(confidence="tail")) == pytest.approx({7: 0.5, 9: 4.0})


def test_composite_score_of_the_aimo3_second_place() -> None:
    from kit.runtime.voting import composite_scores

    vs = [hv(7, tail=0.5), hv(7, tail=0.5), hv(7, tail=0.8), hv(9, tail=0.1), hv(11, tail=1.0)]
    w = Weighting(confidence="tail", score="composite")
    scores = composite_scores(vs, w)
    # 7: share 3/5, median H 0.5, strict majority → 2·0.6 + 0.3/0.5 + 0.5 = 2.3
    # 9: share 1/5, H 0.1 → 0.4 + 3.0 = 3.4;  11: 0.4 + 0.3 = 0.7
    assert scores == pytest.approx({7: 2.3, 9: 3.4, 11: 0.7})
    assert majority(vs, w) == 9
    # without entropies the score is 2·share + 0.5·consensus: the plain majority
    plain = [hv(3), hv(3), hv(5)]
    assert composite_scores(plain, w) == pytest.approx({3: 2 * 2 / 3 + 0.5, 5: 2 / 3})
    # a tie in share and no majority: consensus 0 for both, the lower median entropy wins
    assert majority([hv(1, tail=0.6), hv(2, tail=0.3)], w) == 2
    with pytest.raises(ValueError, match="confidence"):
        Weighting(confidence="max")  # type: ignore[arg-type]


def test_leader_cannot_be_caught_is_judged_on_counts_under_entropy_weights() -> None:
    rules = StopRules(agreements=(), weighting=Weighting(confidence="mean"))
    # by weight 7 leads 20 to 1.1 (far more than one running vote of weight 1), but by count 9 leads 2 to 1
    vs = [hv(7, 0.05, order=0), hv(9, 1.0, order=1), hv(9, 10.0, order=2)]
    d = decided(vs, running=1, rules=rules)
    assert not d.stop and d.answer == 7
    more = [hv(7, 1.0, order=k) for k in (3, 4)]
    assert not decided([*vs, *more], running=1, rules=rules).stop  # 3 to 2: one vote could tie it
    d = decided([*vs, *more, hv(7, 1.0, order=5)], running=1, rules=rules)
    assert d.stop and d.reason == "certain" and d.answer == 7


def test_stop_at_k_votes() -> None:
    rules = StopRules(agreements=(Agreement(4, 4, "any"),), certain=False)
    vs = [Vote(a, order=i) for i, a in enumerate((5, 6, 5, 5, 6))]
    assert not decided(vs, running=3, rules=rules).stop
    d = decided([*vs, Vote(5, order=5)], running=2, rules=rules)
    assert d.stop and d.answer == 5 and d.reason == "agreement: 4 votes"
