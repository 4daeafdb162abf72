# Two commands matter: `make demo` and `make test`. Both create .venv when it is
# missing, install geocells into it (with CI's exact versions from constraints.txt),
# and are quick when everything is already in place.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.geocells-installed
SOURCES := src tests benchmarks
# Idle OpenMP threads (torch, faiss) sleep instead of spinning: on 2 cores shared with
# data-loader workers or xdist workers, spinning threads starve each other.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test lint format demo clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

# lint-imports checks the layer contract in pyproject.toml: no module imports a later stage.
lint: $(STAMP)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format $(SOURCES)
	$(VENV)/bin/ruff check --fix $(SOURCES)

test: lint
	$(PY) -m pytest -q -n 2 --durations=15

demo: $(STAMP)
	$(VENV)/bin/geocells demo

clean-venv:
	rm -rf $(VENV)
