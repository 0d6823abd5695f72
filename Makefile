# The two commands of the README. Each creates .venv first if it is missing or stale.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test bench clean

setup:
	@bash scripts/setup_env.sh

run: setup
	@$(PY) -m dotseg.cli train --config configs/quickstart.yaml

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@$(PY) benchmarks/synth.py

clean:
	rm -rf runs .pytest_cache
