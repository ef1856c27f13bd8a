"""The placeholder dry-run (replay of recorded samples) through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kit.cli import main


def test_dryrun_replay_writes_records_and_summary(tmp_path: Path) -> None:
    assert main(["dryrun", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problems"] == 30
    assert 0 < summary["correct"] <= 30
    assert summary["samples_used"] < summary["samples_total"] == 330  # early stop saved samples
    rows = summary["rows"]
    assert all(0 <= r["answer"] <= 999 for r in rows)
    assert sum(r["correct"] for r in rows) == summary["correct"]
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"result"' in ln]) == 30
    assert len(lines) == 30 + summary["samples_used"]


def test_without_early_stop_every_sample_votes(tmp_path: Path) -> None:
    assert main(["dryrun", "--no-early-stop", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["samples_used"] == summary["samples_total"]
    assert summary["correct"] == summary["correct_without_early_stop"]


def test_bad_pool_is_one_clear_line_and_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "kit", "dryrun", "--pool", "no-such-pool"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: trace pool 'no-such-pool'")
    assert "Traceback" not in proc.stderr
