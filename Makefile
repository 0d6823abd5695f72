# The two commands of the README. Each creates .venv first if it is missing or stale.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-run run lint check test bench clean

setup:
	@bash scripts/setup_env.sh

setup-run:
	@DOTSEG_EXTRAS=fast bash scripts/setup_env.sh

run: setup-run
	@$(PY) -m dotseg.cli train --config configs/quickstart.yaml

# Lint first (seconds; mypy's first run ~30 s, then cached), so a style or type error fails fast.
lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

# The development tier: lint and every test that needs no Ray, no browser and no training run
# (markers per test; < 3 min on 2 cores). `make test` is the full suite, and what CI runs.
check: lint
	@$(PY) -m pytest -m "not ray and not slow" $(PYTEST_ARGS)

test: lint
	@bash scripts/test_deps.sh
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@$(PY) benchmarks/synth.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
