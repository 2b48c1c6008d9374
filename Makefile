# rakuten-mlops: every target runs on the embedded default unless said otherwise.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAKUTEN_HOME ?= $(CURDIR)/.rakuten

.PHONY: help venv demo test test-quick lint bench bench-serve serve ui render-workflows clean \
        kind-up images deploy kind-e2e kind-down

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/rakuten-mlops: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/rakuten-mlops ## create the virtualenv and install the package with dev tools

demo: venv ## run the whole pipeline on the embedded default (SQLite + local MLflow)
	$(BIN)/python -m rakuten_mlops.demo

test: venv ## the whole test suite (slow tests included), as CI runs it
	$(BIN)/python -m pytest -q

test-quick: venv ## fast subset (no real servers, no image builds)
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

lint: venv ## ruff
	$(BIN)/ruff check src tests workflows operator
	$(BIN)/ruff format --check src tests workflows operator

bench: venv ## benchmarks: generation, loading, training, drift (ratios against peers)
	$(BIN)/python -m benchmarks.run

bench-serve: venv ## prediction API vs `mlflow models serve` under wrk (needs Debian's wrk)
	$(BIN)/python -m benchmarks.bench_serve

serve: venv ## run the prediction API on :8000 (embedded default)
	$(BIN)/rakuten-mlops serve --port 8000

ui: venv ## the control room on :8501
	$(BIN)/rakuten-mlops ui --port 8501

render-workflows: venv ## regenerate the Argo YAML in charts/rakuten-mlops/files/workflows from workflows/*.py
	$(BIN)/python -m workflows render

clean: ## remove the embedded default's files
	rm -rf .rakuten
