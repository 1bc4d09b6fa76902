# `make demo` and `make test` set up a virtual environment on first use (.venv), then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-min lint bench clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/avmaster demo $(ARGS)

# pytest-xdist workers (each gets an equal share of the cores; 0 = one process)
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(ARGS)

test-fast: $(STAMP)  # everything but the tests marked slow (CI runs those too)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(ARGS)

# The suite on the oldest versions setup.cfg allows (tests/minimum_versions.txt), in a virtual
# environment of its own; give it the oldest Python allowed: make test-min PYTHON=python3.10
VENV_MIN := .venv-min
test-min:
	test -d $(VENV_MIN) || $(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q -c tests/minimum_versions.txt -e ".[dev,clap]"
	$(VENV_MIN)/bin/python -m pytest -q -n $(TEST_WORKERS) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check avmaster tools tests

bench: $(STAMP)
	$(BIN)/python tools/bench_train.py
	$(BIN)/python tools/bench_extract.py

clean-venv:
	rm -rf $(VENV) $(VENV_MIN)
