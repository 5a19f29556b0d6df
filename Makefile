# The two commands of the README: `make run` and `make test`. `make bench` for the figures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODULE := erp_backup_pipeline.orchestration.definitions

.PHONY: run test bench install install-test system-deps lint clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip check

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip check

system-deps:
	scripts/system-deps.sh

run: install system-deps
	scripts/run-local.sh

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install-test system-deps lint
	home=$$(mktemp -d) && DAGSTER_HOME=$$home $(BIN)/dagster definitions validate -m $(MODULE); rc=$$?; rm -rf "$$home"; exit $$rc
	$(BIN)/python -m pytest

bench: install-test system-deps
	$(BIN)/python -m bench --repeat 3

clean:
	rm -rf var test-output bench/out .pytest_cache
