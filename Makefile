# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

PRISM := .cache/prism/node_modules/.bin/prism

# Stoplight Prism serves the vendors' OpenAPI specs for the contract tests (needs node and npm).
$(PRISM):
	@if command -v npm >/dev/null; then \
	  npm install --prefix .cache/prism --no-audit --no-fund --silent @stoplight/prism-cli@5; \
	else echo "npm not found: the contract tests will skip (and fail under CI=true)"; fi

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/backchannel demo

test: $(STAMP) $(PRISM)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check daemon channels tests bench
	$(BIN)/ruff format --check daemon channels tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/failover.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
