# `make demo` and `make test` each set everything up from nothing.
# Every Python package comes from requirements.lock (pinned); `make lock` refreshes it.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# GPU=1 installs requirements-cuda.lock: the same pins plus xformers. torch==2.13.0 is
# the CPU wheel on the build machines and PyPI's CUDA build everywhere else.
GPU    ?= 0
LOCK   := $(if $(filter 1,$(GPU)),requirements-cuda.lock,requirements.lock)

.PHONY: demo test lint bench clean install lock

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-cuda.lock
	bash scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r $(LOCK)
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/farm demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# Re-resolve pyproject.toml's dependencies and rewrite requirements.lock (on purpose only).
lock:
	bash scripts/lock.sh

clean:
	rm -rf $(VENV) farm-data .pytest_cache
