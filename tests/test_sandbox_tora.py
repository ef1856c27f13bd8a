"""The sandbox reproduces real executed ToRA trajectories (bundled ``tora_gsm8k`` traces); the replay and its
categories are :mod:`kit.offline.sandbox_replay`'s, shared with ``bench/sandbox_tora.py``."""

from __future__ import annotations

from collections import Counter

import pytest

from kit.offline.sandbox_replay import (
    MIN_REPRODUCED,
    MISMATCHES,
    REPRODUCED,
    SUBSET_PER_FILE,
    TORA_EMPTY_STDOUT,
    TORA_TIMEOUT_TEXTS,
    Block,
    classify,
    parse_blocks,
    replay,
    subset,
    tora_sandbox,
    tora_view,
    trajectory_blocks,
)
from kit.offline.traces import load_pool
from kit.runtime.sandbox import RunResult, Status

# --- tests ------------------------------------------------------------------------------------------

_TEXT = (
    "Let's compute.\n```python\nx = 3\nprint(x * 2)\n```\n```output\n6\n```\nNow more.\n"
    "```python\nprint('a')\nprint(x + 1)\n```\n```output\n4\n```\nNo run:\n```python\nprint(0)\n```"
)


def test_parse_blocks_pairs_each_code_block_with_its_recorded_output() -> None:
    pairs, unpaired = parse_blocks(_TEXT)
    assert pairs == [("x = 3\nprint(x * 2)\n", "6"), ("print('a')\nprint(x + 1)\n", "4")]
    assert unpaired == 1


def test_tora_view_mirrors_the_harness_output_shaping() -> None:
    def r(status: Status, out: str = "", err: str = "") -> RunResult:
        return RunResult(status, out, err, 0.0)

    assert tora_view(r(Status.OK, "a\nb\n")) == "b"
    assert tora_view(r(Status.OK, "")) == TORA_EMPTY_STDOUT
    assert tora_view(r(Status.OK, "1" * 150 + "\n")) == "1" * 50 + "..." + "1" * 50
    assert tora_view(r(Status.ERROR, "partial\n", "Traceback ...\nNameError: name 'y' is not defined")) == (
        "NameError: name 'y' is not defined")
    assert tora_view(r(Status.TIMEOUT)) == TORA_TIMEOUT_TEXTS[0]


def test_classify_tells_reproductions_from_mismatches() -> None:
    def r(status: Status, out: str = "", err: str = "") -> RunResult:
        return RunResult(status, out, err, 0.0)

    assert classify(r(Status.OK, "18\n"), "18") == "exact"
    assert classify(r(Status.OK, "0.30000000000000004\n"), "0.3") == "float"
    assert classify(r(Status.OK, "a\n18\n"), "18") == "harness shaping"
    assert classify(r(Status.ERROR, "", "Traceback\nKeyError: 'b'"), "KeyError: 'a'") == "error text differs"
    assert classify(r(Status.TIMEOUT), TORA_TIMEOUT_TEXTS[1]) == "timeout (both)"
    assert classify(r(Status.OK, "1\n"), TORA_TIMEOUT_TEXTS[0]) == "timeout (one side)"
    assert classify(r(Status.MEMORY, "", "MemoryError: ..."), "5") == "sandbox limit"
    assert classify(r(Status.OK, "1.0000001\n"), "1.0") == "float close"
    assert classify(r(Status.OK, "17\n"), "18") == "different"


@pytest.fixture(scope="module")
def tora_trajectories() -> list[list[Block]]:
    trajectories, _ = trajectory_blocks(load_pool("tora_gsm8k"))
    return trajectories


@pytest.mark.slow
def test_sandbox_reproduces_recorded_tora_outputs(tora_trajectories: list[list[Block]]) -> None:
    chosen = subset(tora_trajectories)
    files = {blocks[0].source for blocks in chosen}
    assert len(files) == 2 and len(chosen) >= 2 * SUBSET_PER_FILE - 2
    with tora_sandbox(workers=4) as sb:
        outcomes = replay(sb, chosen, mode="trajectory")
    counts = Counter(o.category for o in outcomes)
    assert set(counts) <= set(REPRODUCED) | set(MISMATCHES)
    reproduced = sum(o.reproduced for o in outcomes)
    misses = [(o.block.source, o.block.trajectory, o.category, o.block.recorded, tora_view(o.result))
              for o in outcomes if not o.reproduced]
    assert reproduced >= MIN_REPRODUCED * len(outcomes), (counts, misses[:10])
    # the error and timeout cases were chosen on purpose: they must come out as the harness showed them
    assert counts["timeout (both)"] >= 1 and counts["harness shaping"] >= 3, counts
