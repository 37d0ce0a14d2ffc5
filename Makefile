# op-sentinel: everything a fresh clone needs is installed from here (see README "Set-up").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Azurite (the Azure Storage emulator) for the Blob state tests: the npm package, pinned by the lockfile
# in tests/azurite, installed into .azurite/. Without npm the tests that need it are skipped (they say so).
AZURITE_DIR := .azurite
AZURITE_STAMP := $(AZURITE_DIR)/.installed

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

$(AZURITE_STAMP): tests/azurite/package.json tests/azurite/package-lock.json
	@if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "npm not found: installing Debian's nodejs and npm for Azurite"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) || true; \
	fi
	@if command -v npm >/dev/null 2>&1; then \
		echo "installing Azurite into $(AZURITE_DIR)/ (npm ci)"; \
		mkdir -p $(AZURITE_DIR) && cp tests/azurite/package.json tests/azurite/package-lock.json $(AZURITE_DIR)/ && \
		npm ci --prefix $(AZURITE_DIR) --no-audit --no-fund --loglevel=error && touch $@; \
	else \
		echo "npm not found: the tests that need Azurite will be skipped (install Node.js 20+ and npm)"; \
	fi

install-test: $(TEST_STAMP) $(AZURITE_STAMP)

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
	rm -rf $(VENV) $(AZURITE_DIR) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
