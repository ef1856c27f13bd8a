"""The token replay: a logged gpt-oss run played by token ids through the whole AIMO3 session (time bank,
attempts, tool calls on the sandbox, the stop at a box, entropy votes, records), in virtual time."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from kit.cli import main
from kit.offline.runs import load_pool_run, read_events
from kit.runtime.confidence import token_entropy
from kit.runtime.engines.base import GenParams
from kit.runtime.protocols.harmony import CALL, RETURN
from kit.runtime.solver import Solver, sandbox_for
from kit.runtime.solver_config import AIMO3_SOLVER
from kit.sim.harmony_logs import LogShape, harmony_log, write_attempt_table, write_harmony_log
from kit.sim.token_replay import TokenReplayEngine, entropy_row

SHAPE = LogShape(problems=6, attempts=8, seed=5)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return harmony_log(SHAPE)


@pytest.fixture(scope="module")
def log(rows, tmp_path_factory) -> Path:
    return write_harmony_log(tmp_path_factory.mktemp("log") / "gpt-oss-run.jsonl", rows)


def _logged(rows: list[dict], pid: str, index: int) -> dict:
    return [r for r in rows if r["problem_id"] == pid][index]


def test_the_aimo3_dryrun_replays_a_logged_run(log, rows, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["dryrun", "--stack", "gpt-oss", "--profile", "aimo3", "--engine", "replay", "--traces", str(log),
                 "--problems", str(log), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    golds = {r["problem_id"]: r["gold"] for r in rows}
    assert {r["id"]: r["gold"] for r in summary["rows"]} == golds
    assert all(0 <= r["answer"] <= 99999 and r["error"] is None for r in summary["rows"])
    assert summary["seconds"] > 5  # virtual H100 time for ~300-token attempts, not the replay's real time
    [start] = read_events(out / "records.jsonl", "run_start")
    assert start["policy"] == "ours" and start["policy_params"] == {"finish_signal": -0.24}  # the gpt-oss stack's
    samples = read_events(out / "records.jsonl", "sample")
    finished = [s for s in samples if s["finish_reason"] == "stop"]
    assert len(finished) >= 4 * len(golds)  # a problem stops at 4 votes at the earliest
    for s in finished:
        logged = _logged(rows, s["problem_id"], s["index"])
        assert s["answer"] == logged["answer"], (s["index"], logged["end"])  # the log's answers, as recorded
        assert s["tokens"] <= len(logged["completion_ids"]) + 1  # never past the log (+1: its end, an EOS)
        assert len(s["code"]) == logged["python_calls"]  # each logged call ran in the sandbox, then the log went on
        if logged["end"] == "analysis_box":  # played to its end: the logged confidence
            assert s["entropy_mean"] == pytest.approx(logged["entropy_mean"], abs=1e-3)
    ends = {_logged(rows, s["problem_id"], s["index"])["end"] for s in finished}
    assert ends >= {"analysis_box", "boxed_final", "bare_final"}  # every real ending replayed and read


def test_an_attempt_continues_past_its_tool_calls_as_logged(log, rows) -> None:
    """The kit's own tool message replaces the logged one; the attempt then carries on exactly as logged."""
    pid = next(r["problem_id"] for r in rows if r["python_calls"] >= 2)
    attempts = [r for r in rows if r["problem_id"] == pid]
    cfg = replace(AIMO3_SOLVER, early_stop=False, stop_at_first_boxed=False)
    sandbox = sandbox_for(cfg)
    engine = TokenReplayEngine.from_log(log)
    try:
        result = asyncio.run(Solver(engine, cfg, profile="aimo3", sandbox=sandbox).solve(pid, attempts[0]["problem"]))
    finally:
        sandbox.shutdown()
    for s, logged in zip(result.samples, attempts, strict=True):
        assert s.answer == logged["answer"] and len(s.code) == logged["python_calls"]
        generated = s.tokens - (logged["end"] in ("analysis_box", "cut"))  # a log that ends without a stop: EOS
        own = sum(len(c["output"]) > 0 for c in s.code)
        assert generated == len(logged["completion_ids"]) - _tool_ids(logged), (own, logged["end"])
    assert engine.stats.continuations == sum(a["python_calls"] for a in attempts) and engine.stats.unaligned == 0


def _tool_ids(logged: dict) -> int:
    """Ids of the logged tool messages and the assistant headers after them (the kit writes its own)."""
    ids, n, i = logged["completion_ids"], 0, 0
    while i < len(ids):
        if ids[i] == CALL:
            j = ids.index(200007, i)  # the tool message's <|end|>
            n += j - i + 2  # its ids and <|start|>assistant
            i = j + 3
            continue
        i += 1
    return n


def test_stop_ids_max_tokens_and_unknown_prompts_behave_like_vllm(log, rows) -> None:
    engine = TokenReplayEngine.from_log(log)

    async def run(prompt: list[int], params: GenParams, rid: str):
        last = None
        async for chunk in engine.generate(prompt, params, rid):
            last = chunk
        return last

    from kit.runtime.protocols.harmony import HarmonyProtocol

    prompt = HarmonyProtocol().render_prompt(rows[0]["problem"])
    first = asyncio.run(run(prompt, GenParams(max_tokens=10_000, stop_token_ids=(RETURN, CALL)), "a"))
    logged = rows[0]["completion_ids"]
    end = next((i + 1 for i, t in enumerate(logged) if t in (RETURN, CALL)), len(logged) + 1)
    assert first.tokens == end and first.finish_reason == "stop"
    assert first.stop_reason == (logged[end - 1] if end <= len(logged) else None)
    short = asyncio.run(run(prompt, GenParams(max_tokens=3), "b"))
    assert (short.finish_reason, short.tokens) == ("length", 3)
    with pytest.raises(ValueError, match="no logged problem occurs in the prompt"):
        asyncio.run(run(HarmonyProtocol().render_prompt("An unknown problem."), GenParams(max_tokens=5), "c"))
    with pytest.raises(TypeError, match="token-id prompts"):
        asyncio.run(run("text", GenParams(max_tokens=5), "d"))  # type: ignore[arg-type]


def test_a_long_attempt_streams_the_logged_mean_and_tail_entropy(tmp_path: Path) -> None:
    """~2,000 model-written tokens and two tool calls: mean and tail (last 256 tokens) both as logged."""
    rows = harmony_log(LogShape(problems=1, attempts=1, median_tokens=2000, length_sigma=0.01, analysis_box_share=1.0,
                                cut_share=0.0, max_calls=2, seed=2))
    rows[0] |= {"entropy_mean": 0.9, "entropy_tail": 0.3}
    log = write_harmony_log(tmp_path / "long.jsonl", rows)
    cfg = replace(AIMO3_SOLVER, n_samples=1)
    sandbox = sandbox_for(cfg)
    try:
        result = asyncio.run(Solver(TokenReplayEngine.from_log(log), cfg, profile="aimo3", sandbox=sandbox)
                             .solve("p", rows[0]["problem"]))
    finally:
        sandbox.shutdown()
    s = result.samples[0]
    assert s.answer == rows[0]["answer"] and s.finish_reason == "stop"
    assert (s.entropy_mean, s.entropy_tail) == (pytest.approx(0.9, abs=1e-4), pytest.approx(0.3, abs=1e-4))


@pytest.mark.parametrize("bits", [0.05, 0.7, 1.9])
def test_an_entropy_row_has_the_entropy_asked_for(bits: float) -> None:
    assert token_entropy(entropy_row(bits)) == pytest.approx(bits, abs=1e-6)


def test_the_dryrun_refuses_a_log_it_cannot_replay(log, rows, tmp_path: Path, capsys) -> None:
    assert main(["dryrun", "--engine", "replay", "--traces", str(log), "--out", str(tmp_path / "a")]) == 2
    assert "--stack gpt-oss" in capsys.readouterr().err
    table = write_attempt_table(tmp_path / "t.csv", rows)
    assert main(["dryrun", "--stack", "gpt-oss", "--profile", "aimo3", "--engine", "replay", "--traces", str(table),
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keeps no text or ids to replay" in err[0]


def test_the_log_and_the_replayed_records_read_alike(log, tmp_path: Path) -> None:
    """kit evaluate on the log and on the replay's records: the same answers per attempt that finished."""
    out = tmp_path / "run"
    assert main(["dryrun", "--stack", "gpt-oss", "--profile", "aimo3", "--engine", "replay", "--traces", str(log),
                 "--problems", str(log), "--limit", "2", "--out", str(out)]) == 0
    logged = {(p.problem_id, s.index): s.answer for p in load_pool_run(log).problems for s in p.samples}
    records = [s for s in read_events(out / "records.jsonl", "sample") if s["finish_reason"] == "stop"]
    assert records and all(s["answer"] == logged[(s["problem_id"], s["index"])] for s in records)
