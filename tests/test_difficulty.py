"""Difficulty / token predictor: targets vs an independent computation, the tiny encoder, training with
transformers' Trainer on CPU, save/reload/predict, the hook inside a real time bank, cross-fitting and
the paired simulation, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from kit.learn.data import DataError
from kit.learn.difficulty import (
    CLIP,
    DifficultyPredictor,
    ProblemSamples,
    TargetRule,
    TinyEncoderSpec,
    build_tiny_encoder,
    factors_from_tokens,
    kfold,
    problem_text,
    problems_from_records,
    problems_from_traces,
    regression_metrics,
    simulate_hooks,
    split_by_problem,
    table_hook,
    targets_frame,
)
from kit.offline.runs import read_events
from kit.offline.traces import load_pool
from kit.runtime.config import ConfigError
from kit.runtime.records import RunRecorder
from kit.runtime.schedule import Ours, TimeBank
from kit.runtime.throughput import SpeedModel
from kit.runtime.tokens import ApproxTokenizer
from kit.sim.simulate import SimProblem, monte_carlo, pool_from_records, pool_from_traces
from training.common import load_config
from training.difficulty import DifficultyConfig, crossfit, load_targets, run

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "training" / "configs" / "difficulty_tiny.yaml"
B14 = SpeedModel.l4x4_14b_awq()
TIME_BOUND = SpeedModel(B14.step_s * 3, B14.per_seq_s * 3, B14.per_ctx_token_s * 3, B14.prefill_per_token_s * 3)
"""A throughput at which 5 hours bind for 50 SkyThought problems (a 14B model's step times × 3)."""


# --- targets ----------------------------------------------------------------------------------------

HAND = [
    ProblemSamples("a", "text a", ((True, 100), (False, 900), (True, 300), (True, 200))),
    ProblemSamples("b", "text b", ((False, 50), (False, 700))),
    ProblemSamples("c", "text c", ((True, 10), (True, 30))),
]


@pytest.mark.parametrize("statistic", ["median", "min"])
@pytest.mark.parametrize("unsolved", ["cap", "longest", "drop"])
def test_targets_equal_an_independent_computation(statistic: str, unsolved: str) -> None:
    rule = TargetRule(statistic=statistic, unsolved=unsolved, cap_tokens=4321)  # type: ignore[arg-type]
    expected = {}
    for p in HAND:
        correct = [t for ok, t in p.samples if ok]
        if correct:
            expected[p.pid] = (statistics.median(correct) if statistic == "median" else min(correct), False)
        elif unsolved != "drop":
            expected[p.pid] = (4321 if unsolved == "cap" else max(t for _, t in p.samples), True)
    got = targets_frame(HAND, rule)
    assert {r["pid"]: (r["tokens"], r["censored"]) for r in got.iter_rows(named=True)} == expected
    assert got.filter(got["pid"] == "a").row(0, named=True) | {"tokens": 0} == {
        "pid": "a", "text": "text a", "n_samples": 4, "n_correct": 3, "censored": False, "tokens": 0}


@pytest.mark.slow
def test_trace_pool_targets_follow_the_recorded_verdicts_and_token_counts() -> None:
    problems = problems_from_traces("skythought_aime24")
    frame = targets_frame(problems)
    raw = load_pool("skythought_aime24")
    count = ApproxTokenizer().count
    assert frame.height == 30 and set(frame["n_samples"]) == {11}
    for row in frame.iter_rows(named=True):
        mine = [s for s in raw if s.problem_id == row["pid"]]
        correct = [count(s.text) for s in mine if s.recorded_correct]
        assert row["text"] == mine[0].problem
        assert row["n_correct"] == len(correct)
        assert row["tokens"] == (statistics.median(correct) if correct else TargetRule().cap_tokens)
    assert 0 < frame["censored"].sum() < 30


def _problem_set(tmp_path: Path) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps({"id": i, "problem": f"Problem {i}: find x.", "answer": a}) + "\n"
                            for i, a in (("p1", 5), ("p2", 7), ("p3", 9))))
    return path


def _records(path: Path, problems: Path, *, with_tokens: bool = True) -> Path:
    with RunRecorder(path) as rec:
        rec.write("run_start", options={"problems": str(problems)})
        for pid, gold in (("p1", 5), ("p2", 7)):
            for i, (answer, tokens) in enumerate(((gold, 400), (1, 900), (gold, 600), (2, 50))):
                fields = {"tokens": tokens} if with_tokens else {}
                rec.write("sample", problem_id=pid, index=i, answer=answer if pid == "p1" else 1,
                          text="word " * (i + 1), finish_reason="stop", **fields)
            rec.write("sample", problem_id=pid, index=9, answer=gold, tokens=5, finish_reason="abort", text="w")
            rec.write("problem", problem_id=pid, gold=gold, answer=gold)
        rec.write("sample", problem_id="p3", index=0, answer=9, tokens=10, finish_reason="stop", text="w")
        rec.write("problem", problem_id="p3", gold=None, answer=9)  # no gold: skipped
    return path


def test_record_targets_texts_and_token_counts(tmp_path: Path) -> None:
    problems = _problem_set(tmp_path)
    records = _records(tmp_path / "records.jsonl", problems)
    got = targets_frame(problems_from_records(records))
    assert got.select("pid", "text", "n_samples", "n_correct", "censored", "tokens").rows() == [
        ("p1", "Problem p1: find x.", 4, 2, False, 500.0),  # median of the two correct: 400, 600
        ("p2", "Problem p2: find x.", 4, 0, True, 1024.0),  # never correct: the cap (aborted one ignored)
    ]
    # the simulator's records pool reads the same texts (from the run's problem set); ``texts`` overrides
    assert [p.text for p in pool_from_records(records)] == ["Problem p1: find x.", "Problem p2: find x."]
    pool = pool_from_records(records, texts={"p1": "Other p1."})
    assert [p.text for p in pool] == ["Other p1.", "Problem p2: find x."]
    # records that carry the statements (the solver writes them in its problem events) need no problem set
    own = tmp_path / "own.jsonl"
    with RunRecorder(own) as rec:
        for i, (answer, tokens) in enumerate(((5, 300), (5, 500), (4, 800))):
            rec.write("sample", problem_id="q", index=i, answer=answer, tokens=tokens, text="t", finish_reason="stop")
        rec.write("problem", problem_id="q", problem="Recorded statement q.", gold=5, answer=5)
    assert targets_frame(problems_from_records(own)).select("pid", "text", "tokens").rows() == [
        ("q", "Recorded statement q.", 400.0)]

    bare = _records(tmp_path / "bare" / "records.jsonl", problems, with_tokens=False)
    with pytest.raises(DataError, match=r"bare/records\.jsonl:\d+: sample event \(problem p1\) has no 'tokens'"):
        problems_from_records(bare)
    approx = ApproxTokenizer()
    counted = problems_from_records(bare, tokenizer=approx)
    texts = [e["text"] for e in read_events(bare, "sample") if e["problem_id"] == "p1" and e["finish_reason"] == "stop"]
    assert counted[0].samples == tuple((c, approx.count(t)) for c, t in zip((True, False, True, False), texts, strict=True))


def test_bad_record_inputs_name_the_file_and_field(tmp_path: Path) -> None:
    problems = _problem_set(tmp_path)
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"event": "sample", "version": 0, "problem_id": "p1"}) + "\n")
    with pytest.raises(DataError, match=r"old\.jsonl:1: record version 0"):
        problems_from_records(old)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "zz", "problem": "?"}) + "\n")
    with pytest.raises(DataError, match=r"problem 'p1' has no recorded text and is not in the problem set .*other\.jsonl"):
        problems_from_records(_records(tmp_path / "r.jsonl", problems), problems=other)
    no_start = tmp_path / "no_start.jsonl"
    with RunRecorder(no_start) as rec:
        rec.write("sample", problem_id="p1", index=0, answer=5, tokens=10, finish_reason="stop", text="t")
        rec.write("problem", problem_id="p1", gold=5, answer=5)
    with pytest.raises(DataError, match=r"problem 'p1' has no recorded text and is not in the problem set \(none given\)"):
        problems_from_records(no_start)


@pytest.mark.slow
def test_bad_inputs_empty_pool_and_config(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty pool"):
        targets_frame([])
    with pytest.raises(DataError, match="appears twice"):
        targets_frame([HAND[0], HAND[0]])
    with pytest.raises(DataError, match="nothing is left"):
        targets_frame([HAND[1]], TargetRule(unsolved="drop"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.jsonl"):
        problems_from_traces(tmp_path / "empty")
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_CONFIG.read_text() + "learning_rat: 1e-3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key\(s\) 'learning_rat'"):
        load_config(DifficultyConfig, bad)
    with pytest.raises(ConfigError, match=r"target\.unsolved: 'never' is not one of"):
        load_config(DifficultyConfig, TINY_CONFIG, ["--target", "{unsolved: never}"])
    with pytest.raises(ConfigError, match="eval_fraction must be in"):
        load_config(DifficultyConfig, TINY_CONFIG, ["--eval_fraction", "1.5"])
    proc = subprocess.run([sys.executable, "-m", "training.difficulty", "--config", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "learning_rat" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "training.difficulty", "--config", str(TINY_CONFIG), "--sources",
                           f"[{{path: {tmp_path / 'nowhere'}}}]"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nowhere" in proc.stderr
    with pytest.raises(FileNotFoundError, match=r"no difficulty\.json"):
        DifficultyPredictor.load(tmp_path)


# --- splits and metrics -----------------------------------------------------------------------------


def _ranks(xs: list[float]) -> list[float]:
    """Average ranks, written out plainly (1-based; ties share the mean of their positions)."""
    order = sorted(xs)
    return [statistics.fmean(i + 1 for i, v in enumerate(order) if v == x) for x in xs]


def test_metrics_agree_with_a_plain_computation() -> None:
    pred = [100.0, 400.0, 400.0, 2000.0, 50.0, 3000.0]
    true = [120.0, 300.0, 900.0, 1500.0, 80.0, 900.0]
    m = regression_metrics(pred, true, baseline=500.0)
    lp, lt = [math.log(v) for v in pred], [math.log(v) for v in true]
    assert m["n"] == 6
    assert m["spearman"] == pytest.approx(statistics.correlation(_ranks(pred), _ranks(true)))
    assert m["pearson_log"] == pytest.approx(statistics.correlation(lp, lt))
    assert m["mae_log"] == pytest.approx(statistics.fmean(abs(a - b) for a, b in zip(lp, lt, strict=True)))
    assert m["mae_log_baseline"] == pytest.approx(statistics.fmean(abs(math.log(500) - b) for b in lt))
    assert math.isnan(regression_metrics([7.0] * 4, [1.0, 2.0, 3.0, 4.0])["spearman"])


def test_splits_are_by_problem_disjoint_and_seeded() -> None:
    ids = [f"q{i}" for i in range(10)] * 3  # repeated ids: one problem, many samples
    train, held = split_by_problem(ids, 0.2, seed=1)
    assert len(held) == 2 and len(train) == 8 and not set(train) & set(held)
    assert split_by_problem(ids, 0.2, seed=1) == (train, held) != split_by_problem(ids, 0.2, seed=2)
    everything, none = split_by_problem(ids, 0.0)
    assert none == [] and sorted(everything) == sorted(set(ids))
    folds = kfold(ids, 3)
    assert sorted(i for f in folds for i in f) == sorted(set(ids)) and [len(f) for f in folds] == [4, 3, 3]
    with pytest.raises(ValueError, match="folds"):
        kfold(ids, 11)


# --- the tiny encoder -------------------------------------------------------------------------------


def test_tiny_encoder_is_cached_and_uses_the_tiny_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from kit.runtime.tiny_model import build_tiny_model

    path = build_tiny_encoder(tmp_path / "enc")
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    first_bytes = (path / "model.safetensors").read_bytes()
    assert build_tiny_encoder(tmp_path / "enc") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == "modernbert" and cfg.classifier_pooling == "mean"
    assert AutoTokenizer.from_pretrained(path).get_vocab() == AutoTokenizer.from_pretrained(build_tiny_model()).get_vocab()
    other = build_tiny_encoder(tmp_path / "enc", spec=TinyEncoderSpec(seed=1))  # another spec: rebuilt in place
    assert other == path and (path / "model.safetensors").read_bytes() != first_bytes
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.bin").write_text("x")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        build_tiny_encoder(foreign)


# --- hooks in the time bank -------------------------------------------------------------------------


def _deadline(hook, problem) -> float:
    bank = TimeBank(Ours(difficulty=hook), "aimo2", start=0.0, n_problems=50, max_samples=16)
    return bank.next_budget(100.0, problem).deadline


def test_a_table_hook_moves_real_time_bank_deadlines() -> None:
    factors = {"easy": 0.5, "hard": 2.0}
    hook = table_hook(factors)
    plain = _deadline(None, "easy")
    hard, easy = _deadline(hook, "hard"), _deadline(hook, "easy")
    assert easy - 100 == pytest.approx(0.5 * (plain - 100)) and hard - 100 == pytest.approx(2.0 * (plain - 100))
    sim = SimProblem("x", 1, ((1, 10),), text="hard")
    assert hook(sim) == hook("hard") == 2.0 and problem_text(sim) == "hard"
    with pytest.raises(ValueError, match="no problem text"):
        problem_text(SimProblem("y", 1, ((1, 10),)))
    assert factors_from_tokens({"a": 100.0, "b": 400.0, "c": 1000.0, "d": 5.0}) == {
        "a": 100 / 250, "b": 400 / 250, "c": 4.0, "d": 0.25}  # median 250, clipped to CLIP
    assert CLIP == (0.25, 4.0)


def test_trace_pools_give_the_simulator_problem_texts() -> None:
    raw = {s.problem_id: s.problem for s in load_pool("skythought_aime24")}
    pool = pool_from_traces("skythought_aime24")
    assert [p.text for p in pool] == [raw[p.pid] for p in pool] and all(p.text for p in pool)


# --- training, reload, simulation (slow) ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("difficulty")
    cfg = load_config(DifficultyConfig, TINY_CONFIG, ["--max_steps", "6", "--out", str(out)])
    return out, run(cfg)


@pytest.mark.slow
def test_trains_saves_reloads_and_predicts(trained: tuple[Path, object]) -> None:
    out, report = trained
    meta = json.loads((out / "difficulty.json").read_text())
    assert meta["train_problems"] == 24 and meta["eval_problems"] == 6 and meta["base_model"] == "tiny-encoder"
    assert meta["target"] == dataclasses.asdict(TargetRule())
    assert all(math.isfinite(meta["metrics"][k]) for k in ("mae_log", "mae_log_baseline"))
    assert len((out / "heldout.jsonl").read_text().splitlines()) == 6
    assert "held-out (6 problems)" in str(report)
    predictor = DifficultyPredictor.load(out)
    texts = targets_frame(problems_from_traces("skythought_aime24"))["text"].to_list()
    pred = predictor.predict(texts)
    assert len(pred) == 30 and all(math.isfinite(p) and p > 0 for p in pred)
    assert len({round(p, 6) for p in pred}) > 1  # the text matters
    assert predictor.predict(texts[:3]) == pytest.approx(pred[:3], rel=1e-5)  # batching does not
    # factor 1 is the median prediction over the training problems
    train_ids = set(split_by_problem([str(i) for i in range(30)], 0.2, 0)[0])
    frame = targets_frame(problems_from_traces("skythought_aime24"))
    train_pred = [p for p, pid in zip(pred, frame["pid"], strict=True) if pid in train_ids]
    assert predictor.meta.reference_tokens == pytest.approx(statistics.median(train_pred), rel=1e-4)


@pytest.mark.slow
def test_predictor_hook_orders_real_deadlines(trained: tuple[Path, object]) -> None:
    out, _ = trained
    predictor = DifficultyPredictor.load(out)
    pool = pool_from_traces("skythought_aime24")
    hook = predictor.hook()
    factors = {p.pid: hook(p) for p in pool}
    assert all(CLIP[0] <= f <= CLIP[1] for f in factors.values())
    easiest = min(pool, key=lambda p: factors[p.pid])
    hardest = max(pool, key=lambda p: factors[p.pid])
    assert factors[hardest.pid] > factors[easiest.pid]
    assert hook(hardest.text) == factors[hardest.pid]  # a string (dry-run / Kaggle) works the same
    assert _deadline(hook, hardest) > _deadline(hook, easiest)
    plain = _deadline(None, hardest)
    assert (_deadline(hook, hardest) > plain) == (factors[hardest.pid] > 1)
    assert predictor.hook()(object()) == 1.0  # a problem it cannot read never fails the run


@pytest.mark.slow
def test_dryrun_time_bank_uses_a_trained_predictor(trained: tuple[Path, object], tmp_path: Path) -> None:
    from kit.cli import main as kit_main
    trained_dir, _ = trained
    out = tmp_path / "predictor"  # the trained predictor with its reference doubled: factors near 0.5
    shutil.copytree(trained_dir, out)
    meta = json.loads((out / "difficulty.json").read_text())
    meta["reference_tokens"] *= 2
    (out / "difficulty.json").write_text(json.dumps(meta))
    args = ["dryrun", "--engine", "replay", "--limit", "3", "--samples", "4", "--max-tokens", "20000",
            "--time-limit", "40m"]
    assert kit_main([*args, "--difficulty", str(out), "--out", str(tmp_path / "with")]) == 0
    assert kit_main([*args, "--out", str(tmp_path / "without")]) == 0
    start = read_events(tmp_path / "with" / "records.jsonl", "run_start")[0]
    assert start["config"]["difficulty"] == str(out)
    with_problems = read_events(tmp_path / "with" / "records.jsonl", "problem")
    assert len(with_problems) == 3 and all(p["problem"] for p in with_problems)
    # same problem order and bank state before the first problem: its deadline is scaled by the factor
    factor = DifficultyPredictor.load(out).hook()(with_problems[0]["problem"])
    budgets = {arm: read_events(tmp_path / arm / "records.jsonl", "budget")[0] for arm in ("with", "without")}
    assert budgets["with"]["problem_id"] == budgets["without"]["problem_id"] == with_problems[0]["problem_id"]
    ratio = budgets["with"]["seconds"] / budgets["without"]["seconds"]
    assert factor < 0.8 and ratio == pytest.approx(factor, rel=0.01)  # (start-up time differs a little)


@pytest.mark.slow
def test_simulate_cli_adds_ours_with_the_predictor(trained: tuple[Path, object], tmp_path: Path) -> None:
    from kit.cli import main as kit_main

    out, _ = trained
    table = tmp_path / "sim.json"
    assert kit_main(["simulate", "--runs", "4", "--policies", "ours", "--difficulty", str(out), "--json", str(table),
                     "--plot", str(tmp_path / "sim.png")]) == 0
    rows = json.loads(table.read_text())
    assert [r["policy"] for r in rows] == ["ours", "ours+difficulty", "oracle", "untimed majority"]
    assert kit_main(["simulate", "--runs", "4", "--pool", "synthetic", "--difficulty", str(out),
                     "--plot", str(tmp_path / "s.png")]) == 2  # synthetic problems have no text to read


def test_a_predictor_only_feeds_ours_and_must_exist(tmp_path: Path) -> None:
    from kit.cli import main as kit_main
    from kit.learn.difficulty import policy_with_difficulty

    with pytest.raises(ValueError, match="only feeds the 'ours' time policy"):
        policy_with_difficulty("equal", tmp_path)
    with pytest.raises(FileNotFoundError, match="not a difficulty predictor"):
        policy_with_difficulty("ours", tmp_path)
    assert policy_with_difficulty("ours").difficulty is None
    assert kit_main(["dryrun", "--engine", "replay", "--difficulty", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "records.jsonl").exists()  # refused before anything ran


@pytest.mark.slow
def test_crossfit_feeds_a_simulation_that_reports_score_deltas() -> None:
    cfg = load_config(DifficultyConfig, TINY_CONFIG, ["--max_steps", "2"])
    frame = load_targets(cfg)
    fitted = crossfit(cfg, frame, folds=2)
    assert sorted(fitted["pid"]) == sorted(frame["pid"]) and set(fitted["fold"]) == {0, 1}
    assert all(CLIP[0] <= f <= CLIP[1] for f in fitted["factor"])
    pool = pool_from_traces("skythought_aime24")
    hooks = {"none": None,
             "predicted": table_hook(dict(zip(fitted["text"], fitted["factor"], strict=True))),
             "oracle": table_hook(factors_from_tokens(dict(zip(frame["text"], frame["tokens"], strict=True))))}
    res = {r.name: r for r in simulate_hooks(pool, hooks, runs=12, speed=TIME_BOUND)}
    assert res["none"].delta == 0.0 and res["none"].delta_low == res["none"].delta_high == 0.0
    for r in res.values():
        assert r.ci_low <= r.expected_score <= r.ci_high and r.delta_low <= r.delta <= r.delta_high
        assert r.delta == pytest.approx(r.expected_score - res["none"].expected_score)
        assert r.overruns == 0
    # knowing which problems no sample wins (and how long the winners take) pays when time binds
    assert res["oracle"].delta_low > 0
    # the baseline is exactly the simulator's own Monte Carlo of Ours (same seeds)
    mc = monte_carlo(pool, Ours, runs=12, speed=TIME_BOUND)
    assert res["none"].expected_score == pytest.approx(mc.expected_score)
