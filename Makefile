# `make test` runs every test: the Rust workspace, then the Python package's suite in a virtual
# environment (.venv, made on first use; the extension is rebuilt into it on each run).
PYTHON ?= python3
VENV ?= .venv

.PHONY: test test-rust test-python venv

test: test-rust test-python

test-rust:
	cargo test --workspace

$(VENV)/bin/pytest:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q pytest ipython

venv: $(VENV)/bin/pytest
	$(VENV)/bin/pip install -q ./python

test-python: venv
	$(VENV)/bin/pytest -q python/tests
