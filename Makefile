# Two entry points for a fresh machine: `make demo` (the circles study) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# The dev/CI environment pins the CPU build of torch; the library itself accepts a range.
TORCH   = torch==2.13.0

.PHONY: demo test lint install install-test data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q "$(TORCH)" -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/bnlab run circles --seeds 10 --out runs/circles

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks

test: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
