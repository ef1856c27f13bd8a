# One command each for a fresh Linux machine with Python 3.11 (no GPU needed):
#   make dryrun   - set up .venv if needed, then run the main job (local dry-run)
#   make test     - set up .venv if needed, then run the whole test suite (= bash .ci/run)
#   make test-fast - the tests not marked slow (under 3 minutes), for the edit loop
# Variables: PYTHON (interpreter used to create the venv), VENV (its folder), REQUIREMENTS, ARGS.
PYTHON ?= python3.11
VENV ?= .venv
REQUIREMENTS ?= requirements.txt
ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aimo-kit-installed

.PHONY: setup dryrun test test-fast lint bench clean-venv

setup: $(STAMP)

# Re-installs only when a requirements file or pyproject.toml changed.
$(STAMP): $(REQUIREMENTS) $(wildcard requirements/*.txt) pyproject.toml scripts/setup_venv.sh
	PYTHON="$(PYTHON)" VENV="$(VENV)" REQUIREMENTS="$(REQUIREMENTS)" bash scripts/setup_venv.sh
	touch $@

dryrun: $(STAMP)
	$(PY) -m kit dryrun $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) bench/answers.py
	$(PY) bench/sandbox.py
	$(PY) bench/sandbox_tora.py
	$(PY) bench/solver.py
	$(PY) bench/evaluate.py
	$(PY) bench/selection.py
	$(PY) bench/grpo_toy.py
	$(PY) bench/difficulty.py
	$(PY) bench/harmony.py

clean-venv:
	rm -rf $(VENV)
