# BlindAI developer entry points. Everything a fresh machine needs is installed by these.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-compat test-slow bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,cli,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py

# the whole suite: unit, integration, and the original PyPI clients (compat) against our server
test: install
	bash scripts/compat_env.sh
	$(BIN)/python -m pytest -q -m "not slow"

# everything but the original-client tier (no compat venvs needed)
test-fast: install
	$(BIN)/python -m pytest -q -m "not compat and not slow"

test-compat: install
	bash scripts/compat_env.sh
	$(BIN)/python -m pytest -q -m compat

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python scripts/bench.py

lint: install
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
