# `make run`: create .venv if missing, install, run the offline default `hf-unlearn run`.
# `make test`: create .venv if missing, install, lint and run the tests.
# CPU machines take the CPU wheel torch==2.13.0; GPU users: `make run TORCH=torch` (or any CUDA build you prefer).
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PYTEST_FLAGS ?= -q

.PHONY: install run test bench

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/hf-unlearn run

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_FLAGS)

bench: install
	$(PY) bench/overhead.py
