# Two entry points: `make demo` (the whole pipeline on a generated demo
# project) and `make test` (mypy, ruff and pytest). Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash demo/run_demo.sh

typecheck: $(STAMP)
	$(PY) -m mypy -p classification -p detection -p data_management

lint: $(STAMP)
	$(VENV)/bin/ruff check .

pytest: $(STAMP)
	$(PY) -m pytest -q

test: typecheck lint pytest

clean:
	rm -rf $(VENV) demo_output
