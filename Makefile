# desync_ref: `make demo` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IMPL   ?= $(BIN)/python -m desync_ref
PYTEST := $(BIN)/python -m pytest

.PHONY: setup system-deps demo test bench-http test-compiled test-pure conformance fixtures lint bench clean

setup: system-deps $(STAMP)

# casync is the oracle of the test suite; zstd is handy for looking into stores;
# nginx-light and wrk are the HTTP load benchmark's reference and load generator.
system-deps:
	@missing=""; \
	command -v casync >/dev/null 2>&1 || missing="$$missing casync"; \
	command -v zstd >/dev/null 2>&1 || missing="$$missing zstd"; \
	command -v update-ca-certificates >/dev/null 2>&1 || missing="$$missing ca-certificates"; \
	command -v nginx >/dev/null 2>&1 || missing="$$missing nginx-light"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "please install:$$missing (apt-get install$$missing)"; exit 1; fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The editable install compiles the kernels with mypyc in place when a compiler exists.
$(STAMP): pyproject.toml setup.py $(wildcard desync_ref/kernels/*.py) | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip setuptools wheel 'mypy>=1.10'
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	@$(BIN)/desync-ref --version
	@touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

# One suite, two backends (compiled kernels, then the pure-Python fallback).
test: setup
	$(BIN)/desync-ref --version
	$(PYTEST) -q tests conformance
	DESYNC_REF_PURE=1 $(PYTEST) -q tests

test-compiled: setup
	$(PYTEST) -q tests conformance

test-pure: setup
	DESYNC_REF_PURE=1 $(PYTEST) -q tests

conformance: setup
	$(BIN)/python conformance/run.py --impl "$(IMPL)"

fixtures: setup
	$(BIN)/python fixtures/make_fixtures.py

lint: setup
	$(BIN)/ruff check desync_ref tests conformance fixtures scripts benchmarks setup.py
	$(BIN)/mypy --strict desync_ref

# Kernels alone (pytest-benchmark), then casync side by side, then peak RSS on 1 GiB.
bench: setup
	@command -v /usr/bin/time >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -q time; }
	$(BIN)/python -m pytest -q -p no:cacheprovider benchmarks/test_kernels.py --benchmark-enable
	$(BIN)/python benchmarks/compare_casync.py
	$(BIN)/python benchmarks/measure_rss.py

clean:
	rm -rf build $(VENV) desync_ref/kernels/*.so

# chunk-server against nginx on the same store, loopback only, bounded time (benchmarks/http_load.py).
bench-http: setup
	$(BIN)/python benchmarks/http_load.py
