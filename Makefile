# The two commands of the README: `make demo` and `make test`.
# Each creates (or reuses) .venv, installs torch 2.13.0 (the CPU wheel these machines hold) and hope.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hope-installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,plot,explore,loggers]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hope demo --out $(DEMO_OUT)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
