# The README's two commands: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The exact versions tested (pyproject.toml declares ranges); they need Python >= 3.11.
CONSTRAINTS := Testing/constraints.txt
# Where pip takes torch from, e.g. https://download.pytorch.org/whl/cpu on a machine without
# an NVIDIA GPU (README, "Getting the right PyTorch"). Empty: the configured index.
TORCH_INDEX ?=

.PHONY: setup demo test bench

# torch first, on its own: its build (CPU or CUDA) is the one choice that depends on the machine.
$(VENV)/.installed: pyproject.toml setup.py $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "make: $(PYTHON) is missing or older than Python 3.11, which the tested versions need: run make PYTHON=python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) torch $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[slicer,test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/osteobmd demo

test: setup
	PYTHONUTF8=1 $(BIN)/python -m pytest -q Testing/python

bench: setup
	$(BIN)/python benchmarks/benchmark_pipeline.py
