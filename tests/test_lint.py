"""The code base stays ruff-clean (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_ruff_clean() -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(root)],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
