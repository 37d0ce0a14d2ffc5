# op-sentinel: everything a fresh clone needs is installed from here (see README "Set-up").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test demo test lint typecheck unit model bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: install
	$(BIN)/op-sentinel demo

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-test
	$(BIN)/mypy

unit: install-test
	$(BIN)/pytest -q

test: lint typecheck unit

# The model-based test of the exactly-once promise, at length (make test runs 20 examples per sink).
MODEL_EXAMPLES ?= 400
model: install-test
	OP_SENTINEL_MODEL_EXAMPLES=$(MODEL_EXAMPLES) $(BIN)/pytest -q tests/property/test_model_exactly_once.py

bench: install-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
