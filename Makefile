# One-command set-up on a machine with only Python 3.11: `make repro` or `make test` create
# .venv, install the pinned requirements (torch==2.13.0) and run the pipeline or the tests.

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: install repro test test-fast benchmark clean-smoke

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the pinned dependencies

repro: $(STAMP)  ## validate params.yaml, then run the whole pipeline (dvc repro)
	python -m undo_lib.config params.yaml
	python -m undo_lib.pipeline --check-params params.yaml
	dvc repro

test: $(STAMP)  ## every test, the end-to-end notebook and dvc repro smoke runs included
	python -m pytest

test-fast: $(STAMP)  ## unit tests only (skips tests marked slow)
	python -m pytest -m "not slow"

benchmark: $(STAMP)  ## seconds per training step (loop vs bare loop vs distillation), written to docs/benchmarks.md
	python -m benchmarks.train_step --setting arithmetic language --out docs/benchmarks.md

clean-smoke:  ## remove the notebooks' default smoke outputs
	rm -rf outputs-smoke
