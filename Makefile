# ragft — two commands for a fresh machine: `make run` and `make test`.
# The venv lives outside the checkout (it is several GB with torch) and is reused by every
# clone on this machine; it is rebuilt only when pyproject.toml or constraints.txt change.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= $(HOME)/.cache/ragft/venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.ragft-deps-$(DEPS_HASH)
INSTALL_LOG := $(VENV)/.ragft-install.log
QUESTION ?= What is the capital of France?
PORT ?= 8501

.PHONY: install run ask setup test test-fast bench lint docs clean

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	@echo "installing ragft's dependencies into $(VENV) (a few minutes, once per machine)"
	@$(BIN)/python -m pip install -q -c constraints.txt -e '.[browser,dev]' >$(INSTALL_LOG) 2>&1 \
	  || { cat $(INSTALL_LOG); echo "error: pip install failed (log: $(INSTALL_LOG))"; exit 1; }
	@rm -f $(VENV)/.ragft-deps-* && touch $@

# Always re-point the editable install at this checkout (cheap: no dependency resolution).
# setuptools prints an informational banner for every editable install: the output is kept in
# a log and shown only when the install fails.
install: $(STAMP)
	@$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . >$(INSTALL_LOG) 2>&1 \
	  || { cat $(INSTALL_LOG); echo "error: pip install failed (log: $(INSTALL_LOG))"; exit 1; }

setup: install
	$(BIN)/ragft setup

# The main job: Ollama + the default model, then the app in the browser (this machine only).
run: setup
	@echo "ragft app: http://127.0.0.1:$(PORT)  (Ctrl+C stops it)"
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

# The CLI in one line: a first answer from the base arm, with its timings.
ask: setup
	$(BIN)/ragft ask --arm base "$(QUESTION)"

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not ollama and not slow"

bench: setup
	$(BIN)/python bench/bench_serve.py
	$(BIN)/python bench/bench_retrieval.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_finetune.py port-vellmar
	$(BIN)/python bench/bench_eval.py squad
	$(BIN)/python bench/bench_cache.py
	$(BIN)/python bench/bench_models.py
	$(BIN)/python bench/bench_prompts.py
	$(BIN)/python bench/bench_parallel.py

lint: install
	$(BIN)/ruff check . && $(BIN)/mypy pipelines eval cli.py

# CLI reference generated from the code (typer), never retyped.
docs: install
	$(BIN)/typer cli utils docs --name ragft --output docs/cli.md

clean:
	-$(BIN)/ragft serve stop
