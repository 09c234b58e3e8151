# The README's two commands: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench

# torch is pinned to the CPU build this project is tested with (a plain `torch` pulls CUDA).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[slicer,test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/osteobmd demo

test: setup
	$(BIN)/python -m pytest -q Testing/python

bench: setup
	$(BIN)/python benchmarks/benchmark_pipeline.py
