# `make test` runs every test: the Rust workspace, then the Python package's suite
# (python/run-tests: builds the package into python/.venv with the workspace's debug build,
# then runs pytest against real clusters).
.PHONY: test test-rust test-python

test: test-rust test-python

test-rust:
	cargo test --workspace

test-python:
	python/run-tests
