# `make demo` and `make test` each set everything up from nothing.
# Every Python package comes from requirements.lock (pinned); `make lock` refreshes it.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock

.PHONY: demo test lint bench clean install lock

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
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
