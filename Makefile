# Kindred — every command a developer or CI runs. Each target bootstraps .venv from nothing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export ORT_DISABLE_TELEMETRY := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv protos check-protos test test-all lint demo bench clean

venv: $(STAMP)

# torch first, pinned: anything unpinned that depends on torch would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[serve,train,dev]"
	touch $(STAMP)

# Regenerates kindred/v1 from protos/ (generated code is committed and never edited by hand).
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/kindred/v1/*.proto

# Fails if the committed generated code differs from a fresh generation.
check-protos: $(STAMP)
	@tmp=$$(mktemp -d); \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp protos/kindred/v1/*.proto; \
	if diff -r -x __init__.py -x __pycache__ $$tmp/kindred/v1 kindred/v1 >/dev/null; then echo "protos: generated code is up to date"; \
	else diff -r -x __init__.py -x __pycache__ $$tmp/kindred/v1 kindred/v1 | head -40; echo "protos: regenerate with 'make protos' and commit"; rm -rf $$tmp; exit 1; fi; \
	rm -rf $$tmp

# The README's test command: everything except suites marked slow (make test-all runs those too).
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy kindred retrieval_svc ranking_svc notify_svc events_svc trainer

# The whole single-machine mesh on generated data: generate → train → index → serve. Ctrl-C stops it all.
demo: $(STAMP)
	$(PY) -m kindred demo

bench: $(STAMP)
	@ls bench/*.py >/dev/null 2>&1 || { echo "no benchmarks yet"; exit 0; }
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
