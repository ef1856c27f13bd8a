"""Re-run the executed code blocks of recorded ToRA trajectories in our sandbox and judge each result.

Each trace text holds ```` ```python ```` blocks, each followed by the ```` ```output ```` block that
ToRA's harness recorded when it ran the block. We re-run every block in the sandbox and compare.

How ToRA produced those outputs (microsoft/ToRA ``src/utils/python_executor.py`` and
``src/infer/inference.py``), which the comparison has to mirror to be fair:

* each round executes only the *latest* block (``extract_program(output)``, ``last_only=True``) in a
  fresh copy of an empty namespace in a ``pebble`` worker process: no state carries between blocks;
* the output shown is the **last line** of stdout, stripped; on an exception only the last line of the
  traceback (``"NameError: name 'x' is not defined"``); with no stdout at all,
  ``readlines()[-1]`` itself raises, so the model saw ``IndexError: list index out of range``;
* results longer than 100 characters were cut to ``first 50 + "..." + last 50``;
* a 5 s ``timeout_decorator`` limit reported ``timeout_decorator.timeout_decorator.TimeoutError:
  'Timed Out'`` (the pool-level limit reported ``Timeout Error``).

Per-block fresh processes and one stateful session per trajectory reproduce equally well here: every
executed trajectory in these files has exactly one code block (``bench/sandbox_tora.py`` measures both,
and a session shared by a whole file). ``tests/test_sandbox_tora.py`` replays a subset on every test run, each trajectory in one session, in order, as
our TIR loop does; ``bench/sandbox_tora.py`` the full set. Full-set figures and the mismatch categories: ``docs/sandbox_tora.md``.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kit.offline.traces import RecordedSample
from kit.runtime.sandbox import RunResult, Sandbox, Status

TORA_TIMEOUT = 5.0
"""ToRA's ``PythonExecutor`` default ``timeout_length``."""
TORA_TIMEOUT_TEXTS = ("timeout_decorator.timeout_decorator.TimeoutError: 'Timed Out'", "Timeout Error")
TORA_EMPTY_STDOUT = "IndexError: list index out of range"
SUBSET_PER_FILE = 300
MIN_REPRODUCED = 0.90

# A code block (ToRA's extract_program: from a line starting "```python" to the next line starting
# "```") and, directly after it, the output block the harness appended ("\n```output\n{result}\n```").
_PAIR = re.compile(r"^```python[^\n]*\n(.*?)^```[^\n]*\n```output\n(.*?)\n```", re.M | re.S)
_CODE = re.compile(r"^```python[^\n]*\n", re.M)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))\b:?")

REPRODUCED = ("exact", "float", "harness shaping", "timeout (both)")
"""Categories that count as reproduced; the others are mismatches."""
MISMATCHES = ("error text differs", "timeout (one side)", "sandbox limit", "float close", "different")


@dataclass(frozen=True)
class Block:
    """One executed code block of a recorded trajectory, with the output the harness recorded."""

    source: str
    trajectory: int
    """Index of the sample in its file."""
    position: int
    """Index of the block in its trajectory."""
    code: str
    recorded: str


@dataclass(frozen=True)
class Outcome:
    block: Block
    result: RunResult
    category: str

    @property
    def reproduced(self) -> bool:
        return self.category in REPRODUCED


def parse_blocks(text: str) -> tuple[list[tuple[str, str]], int]:
    """The (code, recorded output) pairs of a trajectory, in order, and the number of code blocks
    without a recorded output (never executed, so nothing to compare)."""
    pairs = [(code, out) for code, out in _PAIR.findall(text)]
    return pairs, len(_CODE.findall(text)) - len(pairs)


def trajectory_blocks(samples: Iterable[RecordedSample]) -> tuple[list[list[Block]], int]:
    """Blocks grouped by trajectory (samples with none are dropped) and the unpaired-block count."""
    per_file: Counter[str] = Counter()
    trajectories: list[list[Block]] = []
    unpaired = 0
    for sample in samples:
        index = per_file[sample.source]
        per_file[sample.source] += 1
        pairs, missing = parse_blocks(sample.text)
        unpaired += missing
        if pairs:
            trajectories.append([Block(sample.source, index, k, code, out) for k, (code, out) in enumerate(pairs)])
    return trajectories, unpaired


def tora_cut(text: str) -> str:
    return text[:50] + "..." + text[-50:] if len(text) > 100 else text


def tora_view(result: RunResult) -> str:
    """What ToRA's harness would have shown the model for this run (see the module docstring)."""
    if result.status is Status.TIMEOUT:
        return TORA_TIMEOUT_TEXTS[0]
    if result.status in (Status.OK, Status.TRUNCATED):
        lines = io.StringIO(result.stdout).readlines()
        if not lines:
            return TORA_EMPTY_STDOUT
        return tora_cut(lines[-1].strip()) or "Done"
    lines = result.stderr.strip().splitlines()
    return tora_cut(lines[-1].strip()) if lines else ""


def numbers_close(a: str, b: str, rel: float) -> bool:
    """Same text apart from numbers, and every pair of numbers equal within ``rel`` (relative)."""
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
    return bool(na) and all(math.isclose(float(x), float(y), rel_tol=rel, abs_tol=0.0) for x, y in zip(na, nb, strict=True))


def outputs_match(ours: str, recorded: str) -> str | None:
    """``"exact"`` (after strip), ``"float"`` (numbers within 1e-9 relative), or None."""
    a, b = ours.strip(), recorded.strip()
    if a == b:
        return "exact"
    return "float" if numbers_close(a, b, 1e-9) else None


def error_type(line: str) -> str | None:
    m = _ERROR_LINE.match(line.strip())
    return m.group(1) if m else None


def classify(result: RunResult, recorded: str) -> str:
    """One of ``REPRODUCED`` or ``MISMATCHES`` for our run of a block against its recorded output."""
    recorded = recorded.strip()
    recorded_timeout = recorded in TORA_TIMEOUT_TEXTS
    if result.status is Status.TIMEOUT or recorded_timeout:
        return "timeout (both)" if result.status is Status.TIMEOUT and recorded_timeout else "timeout (one side)"
    if result.status in (Status.OK, Status.TRUNCATED) and outputs_match(result.stdout, recorded):
        return str(outputs_match(result.stdout, recorded))
    view = tora_view(result)
    if outputs_match(view, recorded):
        return "harness shaping"
    if result.status in (Status.MEMORY, Status.KILLED) or "sandbox:" in view:
        return "sandbox limit"
    ours_type, recorded_type = error_type(view), error_type(recorded)
    if ours_type is not None and ours_type == recorded_type:
        return "error text differs"
    if numbers_close(view, recorded, 1e-6):
        return "float close"
    return "different"


def _replay_trajectory(sb: Sandbox, blocks: Sequence[Block], mode: str, name: str) -> list[Outcome]:
    session = None if mode == "fresh" else name
    outcomes = []
    for block in blocks:
        result = sb.run(block.code, session=session)
        outcomes.append(Outcome(block, result, classify(result, block.recorded)))
    if session is not None:
        sb.close(session)
    return outcomes


def replay(sb: Sandbox, trajectories: Sequence[Sequence[Block]], mode: str = "trajectory",
           threads: int = 8) -> list[Outcome]:
    """Re-run every block and classify it, in trajectory order.

    ``mode``: ``"trajectory"`` — one session per trajectory, its blocks in order (the default);
    ``"fresh"`` — a fresh process per block (what ToRA did); ``"shared"`` — one session per trace file,
    every block of the file in file order (state leaks across trajectories; a stress test).
    """
    if mode == "shared":
        by_file: dict[str, list[Block]] = {}
        for blocks in trajectories:
            by_file.setdefault(blocks[0].source, []).extend(blocks)
        groups = list(by_file.values())
    elif mode in ("trajectory", "fresh"):
        groups = [list(blocks) for blocks in trajectories]
    else:
        raise ValueError(f"unknown replay mode {mode!r}")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        done = pool.map(lambda ig: _replay_trajectory(sb, ig[1], mode, f"tora-{mode}-{ig[0]}"), enumerate(groups))
        return [outcome for group in done for outcome in group]


def tora_sandbox(workers: int = 4) -> Sandbox:
    """A sandbox set up like ToRA's executor: 5 s per block, outputs kept whole (ToRA cut them itself)."""
    return Sandbox(workers=workers, timeout=TORA_TIMEOUT, memory_mb=1024, output_limit=100_000)


def subset(trajectories: Sequence[Sequence[Block]], per_file: int = SUBSET_PER_FILE) -> list[Sequence[Block]]:
    """The first ``per_file`` trajectories of each file, plus every trajectory whose recorded output is an
    error or a timeout (few, and the only ones that exercise the harness-shaping rules)."""
    return [blocks for blocks in trajectories
            if blocks[0].trajectory < per_file
            or any(error_type(b.recorded) or b.recorded.strip() in TORA_TIMEOUT_TEXTS for b in blocks)]
