"""Fault injection into the submission path (docs/reliability.md): each fault of issue 21's table injected
into a run of several problems through ``predict``, on the real code paths — the solver, the session, the
sandbox, the run recorder — with a scripted gpt-oss model (Harmony messages with a python call, virtual
time). After each: ``predict`` never raised, later problems still got real attempts, the records are valid
JSON lines with every problem present (in ``records.jsonl`` or, where it could not be written, in the
fallback file the recorder said it used), and no sandbox process outlives the run.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import polars as pl
import pytest
from openai_harmony import Message, Role

from kit.runtime.kaggle import SubmissionConfig, build_predict
from kit.runtime.protocols.harmony import CALL, completion_ids, harmony_encoding
from kit.runtime.records import FALLBACK_NAME
from kit.runtime.solver_config import AIMO3_SOLVER
from kit.sim.scripted import Completion, ScriptedEngine

ENC = harmony_encoding()
SOLVER = AIMO3_SOLVER.__class__(**{**AIMO3_SOLVER.__dict__, "n_samples": 3, "max_tokens": 2000, "code_timeout": 5.0})
BEFORE = "records.before-the-disk-filled.jsonl"
PROBLEMS = [(f"p{i}", f"Problem {i}: what is {i} times 7?") for i in range(5)]


def _analysis(text: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("analysis")


def script(request) -> Completion:
    """Every attempt calls python once, then boxes what the tool printed (the product in the problem)."""
    seen = ENC.decode(list(request.prompt))
    k = int(seen.rsplit("Problem ", 1)[1].split(":")[0])
    if request.prompt.count(CALL) == 0:
        call = _analysis(f"print({k} * 7)").with_recipient("python").with_content_type("code")
        return Completion(tuple(completion_ids([_analysis("Let me compute."), call])))
    final = Message.from_role_and_content(Role.ASSISTANT, f"\\boxed{{{k * 7}}}").with_channel("final")
    return Completion(tuple(completion_ids([final])))


@pytest.fixture
def run(tmp_path: Path, monkeypatch):
    """(predict, records folder); the working directory is the test's (the recorder's fallback goes there)."""
    monkeypatch.chdir(tmp_path)
    made = []

    def start(**kw):
        cfg = SubmissionConfig(profile="aimo3", stack="gpt-oss", engine="replay", solver=SOLVER,
                               records_dir=str(tmp_path / "rec"), total_seconds=3600.0)
        predict = build_predict(cfg, engine_factory=lambda: ScriptedEngine(script, decode=ENC.decode), **kw)
        made.append(predict)
        return predict

    yield start, tmp_path
    for p in made:
        p.close()


def _ask(predict, pid: str, problem: str) -> int:
    frame = predict(pl.Series("id", [pid]), pl.Series("problem", [problem]))
    assert frame.columns == ["id", "answer"] and frame["id"].to_list() == [pid]
    return frame["answer"][0]


def _events(*paths: Path) -> list[dict]:
    """Every event of these files (valid JSON lines, each line checked)."""
    out = []
    for path in paths:
        if path.is_file():  # not a folder, not the /dev/full a test put in its place
            for line in path.read_text(encoding="utf-8").splitlines():
                out.append(json.loads(line))
    return out


def _check_run(tmp_path: Path, answers: dict[str, int], *, solved: list[str]) -> list[dict]:
    """Every problem of ``solved`` answered right with real attempts; every asked problem recorded."""
    events = _events(tmp_path / "rec" / BEFORE, tmp_path / "rec" / "records.jsonl", tmp_path / FALLBACK_NAME)
    errors = [e for e in events if e["event"] in ("kaggle_error", "warning")] + [
        (e["problem_id"], e["finish_reason"], e["error"], [c["status"] for c in e["code"]])
        for e in events if e["event"] == "sample" and e["answer"] is None]
    for pid in solved:
        assert answers[pid] == int(pid[1:]) * 7, (pid, answers, errors)
    problems = {e["problem_id"]: e for e in events if e["event"] == "problem"}
    assert set(problems) >= set(answers), (sorted(problems), sorted(answers))
    for pid in solved:
        assert problems[pid]["samples_finished"] >= 1 and problems[pid]["answer"] == answers[pid]
    return events


def _fill_disk(tmp: Path) -> None:
    """From now on every write to the records path fails with ENOSPC, as on a full disk (what was written
    before stays readable, beside it)."""
    path = tmp / "rec" / "records.jsonl"
    path.rename(tmp / "rec" / BEFORE)
    path.symlink_to("/dev/full")


def _no_sandbox_left(predict) -> None:
    pids = predict.runner.session.sandbox.pids() if predict.runner.session and predict.runner.session.sandbox else []
    predict.close()
    time.sleep(0.2)
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text()]
    assert not alive


# --- records ---------------------------------------------------------------------------------------------


def test_the_disk_filling_mid_run_costs_no_answer(run) -> None:
    start, tmp = run
    predict = start(started_at=time.time())
    answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[:2]}
    recorder = predict.runner.recorder
    _fill_disk(tmp)
    answers |= {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[2:]}
    assert recorder.written_to == tmp / FALLBACK_NAME and "No space left" in recorder.degraded
    _check_run(tmp, answers, solved=list(answers))
    _no_sandbox_left(predict)
    [end] = [e for e in _events(tmp / FALLBACK_NAME) if e["event"] == "run_end"]
    assert end["records_degraded"]


def test_a_record_write_failing_inside_a_solve_keeps_the_answer_and_closes_sessions(run) -> None:
    start, tmp = run
    predict = start(started_at=time.time())
    _ask(predict, *PROBLEMS[0])
    session = predict.runner.session
    solver_write = session.solver.recorder.write

    def failing_during_samples(event: str, **fields):
        if event == "sample" and not (tmp / "rec" / "records.jsonl").is_symlink():
            _fill_disk(tmp)
        return solver_write(event, **fields)

    session.solver.recorder.write = failing_during_samples
    answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[1:3]}
    assert session.sandbox._sessions == {}  # no session leaked by the failing write
    _check_run(tmp, answers, solved=list(answers))
    _no_sandbox_left(predict)


def test_records_unwritable_from_the_start_fall_back_and_close_cleanly(run) -> None:
    start, tmp = run
    (tmp / "rec").mkdir()
    (tmp / "rec" / "records.jsonl").symlink_to("/dev/full")
    predict = start(started_at=time.time())
    answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[:3]}
    _check_run(tmp, answers, solved=list(answers))
    predict.close()  # does not raise
    assert (tmp / FALLBACK_NAME).exists()


def test_records_replaced_by_a_folder_mid_run_go_to_the_fallback(run) -> None:
    start, tmp = run
    predict = start(started_at=time.time())
    answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[:2]}
    path = tmp / "rec" / "records.jsonl"
    path.unlink()
    path.mkdir()
    answers |= {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[2:4]}
    assert predict.runner.recorder.written_to == tmp / FALLBACK_NAME
    problems = {e["problem_id"] for e in _events(tmp / FALLBACK_NAME) if e["event"] == "problem"}
    assert problems == {"p2", "p3"}  # the later problems are in the fallback, not in the deleted file
    _check_run(tmp, {k: answers[k] for k in ("p2", "p3")}, solved=["p2", "p3"])


def test_a_lone_surrogate_in_a_problem_is_recorded(run) -> None:
    start, tmp = run
    predict = start(started_at=time.time())
    frame = predict("p3", "Problem 3: what is 3 times 7? \udc80")  # a str (polars cannot hold one)
    assert frame["answer"].to_list() == [21]
    [problem] = [e for e in _events(tmp / "rec" / "records.jsonl") if e["event"] == "problem"]
    assert problem["problem"].endswith("\ufffd")  # cleaned before the model saw it, recorded as solved
    from kit.runtime.records import RunRecorder

    with RunRecorder(tmp / "direct.jsonl") as rec:  # and the recorder itself escapes what it is given
        assert rec.write("warning", what="x", error="odd \udc80 text")
    assert _events(tmp / "direct.jsonl")[0]["error"] == "odd \udc80 text"


# --- inputs ----------------------------------------------------------------------------------------------


def test_a_batch_of_two_rows_answers_both(run) -> None:
    start, tmp = run
    predict = start(started_at=time.time())
    frame = predict(pl.DataFrame({"id": ["p1", "p2"], "problem": [PROBLEMS[1][1], PROBLEMS[2][1]]}))
    assert frame["id"].to_list() == ["p1", "p2"] and frame["answer"].to_list() == [7, 14]
    events = _check_run(tmp, {"p1": 7, "p2": 14}, solved=["p1", "p2"])
    assert any(e["event"] == "kaggle_error" and e["what"] == "batch" for e in events)


@pytest.mark.parametrize("value", [repr(time.time() - 10 * 3600), "-inf", "nan", repr(time.time() + 10 * 3600),
                                   "inf", "yesterday"])
def test_an_implausible_run_start_is_ignored_with_a_warning(run, monkeypatch, value: str, capsys) -> None:
    monkeypatch.setenv("AIMO_KIT_RUN_START", value)
    start, tmp = run
    predict = start()
    answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[:2]}
    _check_run(tmp, answers, solved=list(answers))  # real attempts: the bank was not spent before the start
    events = _events(tmp / "rec" / "records.jsonl")
    [start_event] = [e for e in events if e["event"] == "run_start"]
    assert start_event["startup_counted_from"] == "kit import" and 0 <= start_event["startup_seconds"] < 600
    assert any(e["event"] == "warning" and e["what"] == "run start" for e in events)
    assert "AIMO_KIT_RUN_START" in capsys.readouterr().err


def test_a_plausible_run_start_is_used(run, monkeypatch) -> None:
    monkeypatch.setenv("AIMO_KIT_RUN_START", repr(time.time() - 300))
    start, tmp = run
    predict = start()
    _ask(predict, *PROBLEMS[0])
    [start_event] = [e for e in _events(tmp / "rec" / "records.jsonl") if e["event"] == "run_start"]
    assert start_event["startup_seconds"] >= 299 and "notebook first cell" in start_event["startup_counted_from"]
    assert not math.isnan(start_event["bank_seconds"])


# --- the sandbox -----------------------------------------------------------------------------------------


def test_a_killed_zygote_and_workers_never_hand_out_dead_spares(run) -> None:
    start, tmp = run
    predict = start(started_at=time.time())
    answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[:2]}
    sandbox = predict.runner.session.sandbox
    time.sleep(0.3)  # the pool refilled its spares
    for pid in [p.pid for p in sandbox._spares] + [sandbox._zygote.pid]:
        os.kill(pid, 9)
    time.sleep(0.2)
    answers |= {pid: _ask(predict, pid, text) for pid, text in PROBLEMS[2:]}
    events = _check_run(tmp, answers, solved=list(answers))
    calls = [c for e in events if e["event"] == "sample" and e["problem_id"] in ("p2", "p3", "p4") for c in e["code"]]
    assert calls and all(c["status"] == "ok" for c in calls), calls  # every tool call of the next problems ran
    _no_sandbox_left(predict)
