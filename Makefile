# The two commands of the README: `make demo` and `make test` (and `make test-fast`, without the slow tests).
# Each creates (or reuses) .venv, installs torch 2.13.0 (the CPU wheel these machines hold) and hope.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hope-installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "[1/3] creating $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[2/3] installing torch 2.13.0 (CPU build) into $(VENV): about a minute"
	$(BIN)/python -m pip install -q torch==2.13.0
	@echo "[3/3] installing hope with its dev, plot, explore, loggers, hf and datasets extras: a few minutes"
	$(BIN)/python -m pip install -q -e '.[dev,plot,explore,loggers,hf,datasets]'
	touch $(STAMP)
	@echo "installed; the demo trains each model next"

demo: $(STAMP)
	$(BIN)/hope demo --out $(DEMO_OUT)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n 2

clean:
	rm -rf $(VENV) runs .pytest_cache
