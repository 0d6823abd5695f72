# The two commands of the README. Each creates .venv first if it is missing or stale.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run lint test bench clean

setup:
	@bash scripts/setup_env.sh

run: setup
	@$(PY) -m dotseg.cli train --config configs/quickstart.yaml

# Lint first (seconds; mypy's first run ~30 s, then cached), so a style or type error fails fast.
lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

test: lint
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@$(PY) benchmarks/synth.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
