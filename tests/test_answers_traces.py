"""Real model text: our extractor against the answers recorded by the harnesses that produced it.

Acceptance (issue 2): wherever the recorded prediction is right, we read the same answer; every case
where we differ is listed here and justified in docs/answers.md.
"""

from __future__ import annotations

import pytest

from kit.offline.traces import load_pool
from kit.runtime.answers import extract_answer, grade

POOLS = ["skythought_aime24", "tora_gsm8k", "nemoskills"]

# (pool, file, problem id): cases where the recorded harness was wrong and our reading is right.
# Each is explained in docs/answers.md ("Where we read better than the recorded harness").
BETTER_THAN_RECORDED = {
    ("nemoskills", "output-rs0.jsonl.gz", "train/prealgebra/737.json"),  # "1320 km" vs 1320: units
    ("nemoskills", "output-rs0.jsonl.gz", "train/algebra/2027.json"),  # "(x+y)^2=81": rhs of equation
    ("nemoskills", "output-rs1.jsonl.gz", "train/number_theory/7086.json"),  # \fbox{958} not read
    ("nemoskills", "output-rs2.jsonl.gz", "train/algebra/635.json"),  # trailing empty \boxed{}
    ("nemoskills", "output-rs2.jsonl.gz", "train/algebra/2142.json"),  # "the answer is: \[..\]"
    ("nemoskills", "output-rs2.jsonl.gz", "train/number_theory/918.json"),  # trailing empty \boxed{}
}


def _recorded_right(sample) -> bool:
    if sample.recorded_correct is not None:
        return bool(sample.recorded_correct)
    return sample.recorded_pred is not None and grade(sample.recorded_pred, sample.gold)


@pytest.mark.parametrize("pool", POOLS)
def test_agrees_with_recorded_prediction_wherever_it_is_right(pool: str) -> None:
    samples = load_pool(pool)
    assert len(samples) >= 150
    checked = 0
    disagreements = []
    for s in samples:
        if not _recorded_right(s):
            continue
        ours = extract_answer(s.text)
        checked += 1
        if ours is None or (ours != s.recorded_pred and not grade(ours, s.recorded_pred)):
            disagreements.append((s.source, s.problem_id, s.recorded_pred, ours))
    assert checked >= 100
    assert disagreements == []


def test_where_we_differ_from_a_wrong_recording_we_are_right_and_it_is_documented() -> None:
    better = set()
    for pool in POOLS:
        for s in load_pool(pool):
            if _recorded_right(s):
                continue
            ours = extract_answer(s.text)
            if ours is not None and grade(ours, s.gold):
                better.add((pool, s.source, s.problem_id))
    assert better == BETTER_THAN_RECORDED
    doc = (__import__("pathlib").Path(__file__).parents[1] / "docs" / "answers.md").read_text()
    for _, _, problem_id in BETTER_THAN_RECORDED:
        assert problem_id in doc
