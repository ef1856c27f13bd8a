"""Tuning a time policy by simulation: grid, common random numbers, leave-one-pool-out, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kit.runtime.schedule import make_policy
from kit.runtime.throughput import SpeedModel
from kit.sim.pools import AIMO3_SPEC, SYNTHETIC_SHAPES, pool_synthetic
from kit.sim.simulate import hardware_max_seqs, monte_carlo
from kit.sim.tune import points, tune


def test_grid_points_always_hold_the_defaults() -> None:
    pts = points({"k": (3, 5), "base": (100.0, 200.0)}, {"k": 4, "base": 100.0})
    assert len(pts) == 5 and (("base", 100.0), ("k", 4)) in pts
    assert points({"k": (3, 4)}, {"k": 4}) == [(("k", 3),), (("k", 4),)]


def test_tune_scores_every_point_and_holds_each_pool_out() -> None:
    pools = {"a": pool_synthetic(SYNTHETIC_SHAPES["syn-r1-8"]), "b": pool_synthetic(SYNTHETIC_SHAPES["syn-hard-8"]),
             "c": pool_synthetic(SYNTHETIC_SHAPES["syn-short-8"])}
    grid = {"n_samples": (2, 8), "k": (4,)}
    result = tune("aimo3_baseline", pools, ["l4x4-14b-awq"], runs=8, profile="aimo2", grid=grid)
    assert set(result.scores) == {(("k", 4), ("n_samples", 2)), (("k", 4), ("n_samples", 8))}
    assert result.default == (("k", 4), ("n_samples", 8))
    # each score is the plain Monte Carlo figure of that point on that cell (same seeds: common random numbers)
    direct = monte_carlo(pools["b"], lambda: make_policy("aimo3_baseline", n_samples=2, k=4), runs=8,
                         profile="aimo2", speed=SpeedModel.l4x4_14b_awq()).expected_score
    assert result.score((("k", 4), ("n_samples", 2)), "b") == pytest.approx(direct)
    # the held-out choice for a pool is the best point on the other pools only
    for held in pools:
        others = [p for p in pools if p != held]
        best = max(result.scores, key=lambda pt: sum(result.score(pt, p) for p in others))
        assert result.held_out[held] == best
    rows = result.rows()
    assert [r["pool"] for r in rows] == ["a", "b", "c"]
    assert all(set(r) == {"pool", "default", "in_sample", "held_out", "held_out_params"} for r in rows)
    # in-sample is the best on all pools, so its mean over the pools is >= the held-out mean and the default's
    mean = {key: sum(r[key] for r in rows) / 3 for key in ("default", "in_sample", "held_out")}
    assert mean["in_sample"] >= mean["held_out"] - 1e-9 and mean["in_sample"] >= mean["default"] - 1e-9


def test_tune_rejects_what_it_cannot_do() -> None:
    pool = pool_synthetic(SYNTHETIC_SHAPES["syn-r1-8"])
    with pytest.raises(ValueError, match="at least two pools"):
        tune("ours", {"a": pool}, ["l4x4-7b-awq"], runs=2)
    with pytest.raises(ValueError, match="no tuning grid"):
        tune("equal", {"a": pool, "b": pool}, ["l4x4-7b-awq"], runs=2)
    with pytest.raises(ValueError, match="no parameter"):
        tune("ours", {"a": pool, "b": pool}, ["l4x4-7b-awq"], runs=2, grid={"lucky": (1, 2)})


def test_hardware_caps_the_attempts_at_the_kv_cache() -> None:
    assert hardware_max_seqs("h100-gpt-oss-120b") == 8
    assert hardware_max_seqs("no-such-machine") is None
    pool = pool_synthetic(AIMO3_SPEC)
    capped = monte_carlo(pool, lambda: make_policy("aimo3_baseline", n_samples=16), runs=6, profile="aimo3",
                         speed=SpeedModel.h100_gpt_oss_120b(), max_num_seqs=8)
    eight = monte_carlo(pool, lambda: make_policy("aimo3_baseline", n_samples=8), runs=6, profile="aimo3",
                        speed=SpeedModel.h100_gpt_oss_120b(), max_num_seqs=8)
    assert capped.scores == eight.scores


@pytest.mark.slow
def test_simulate_cli_tune_prints_choice_and_held_out(tmp_path: Path) -> None:
    out = tmp_path / "tune.json"
    proc = subprocess.run([sys.executable, "-m", "kit", "simulate", "--profile", "aimo3", "--tune", "aimo3_baseline",
                           "--pools", "syn-aimo3,syn-aimo3-hard", "--tune-runs", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "chosen on all pools" in proc.stdout and "held-out" in proc.stdout
    data = json.loads(out.read_text())
    assert data["policy"] == "aimo3_baseline" and set(data["chosen"]) == {"base", "high", "n_samples", "k"}
    assert [r["pool"] for r in data["rows"]] == ["syn-aimo3", "syn-aimo3-hard"]
    bad = subprocess.run([sys.executable, "-m", "kit", "simulate", "--tune", "--pools", "syn-r1-8"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "at least two pools" in bad.stderr


def test_simulate_cli_aimo3_rows_have_a_penalized_score(tmp_path: Path) -> None:
    out = tmp_path / "aimo3.json"
    proc = subprocess.run([sys.executable, "-m", "kit", "simulate", "--profile", "aimo3", "--hardware",
                           "h100-gpt-oss-120b", "--runs", "10", "--json", str(out), "--plot", str(tmp_path / "p.png")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [r["policy"] for r in rows] == ["ours", "aimo3_baseline", "equal", "linspace", "oracle",
                                           "untimed majority"]
    for r in rows:
        # two runs of the same problems: the penalized score is their mean per problem, so its expectation is
        # the single run's: it lies within the single run's 95 % CI (10 competitions, fixed seeds)
        assert r["ci_low"] <= r["penalized_score"] <= r["ci_high"], r
        assert 0 <= r["penalized_std"] < r["expected_score"], r
    # the bounds know every sample: their second run wins the same problems
    for r in rows[-2:]:
        assert r["penalized_score"] == pytest.approx(r["expected_score"]), r
    assert "penalized" in proc.stdout
