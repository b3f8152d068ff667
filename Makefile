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

.PHONY: run test lint typecheck pytest setup clean client browser-deps

run: setup client
	$(PY) -m server

test: setup client browser-deps lint typecheck pytest

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

pytest: setup client browser-deps
	$(VENV)/bin/pytest

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
