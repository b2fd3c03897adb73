# `make demo` and `make test` do all set-up themselves: a virtual environment in .venv, then the package.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
DEMO_STAMP = $(VENV)/.installed-demo
# The digits demo runs on the CPU and needs only the core and the `digits` extra: it installs the CPU build of torch
# this machine kind keeps on disk (190 MB against the CUDA build's 5.5 GB), unless a full install is already there.
DEMO_TORCH ?= torch==2.13.0

.PHONY: demo test test-fast mutation lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml
	if [ -f $(STAMP) ]; then touch $(DEMO_STAMP); else \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q "$(DEMO_TORCH)" -e ".[digits]" && touch $(DEMO_STAMP); fi

demo: $(DEMO_STAMP)
	$(VENV)/bin/mooframe demo

test: $(STAMP)
	$(PY) -m mypy
	$(PY) -m pytest -q

# The fast tier for local iteration: everything but the tests marked slow (each over a few seconds).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Mutation testing of the core modules against the fast tests that cover them (docs/mutation.md); not in CI.
# MODULES: a subset, e.g. make mutation MODULES="solvers indicators"; JOBS: parallel mutant runs.
MODULES ?= all
JOBS    ?= 2
mutation: $(STAMP)
	$(PY) benchmarks/mutation.py --jobs $(JOBS) $(MODULES)

lint: $(STAMP)
	$(VENV)/bin/ruff check mooframe tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
