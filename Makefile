# Two entry points: `make demo` (the whole pipeline on a generated demo
# project) and `make test` (mypy, ruff and pytest). Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the independent MegaDetector-format validator, for tests only: the megadetector
# package without its heavy dependencies (YOLOv5, matplotlib...), plus what the
# validator module imports
VALIDATOR := megadetector==10.0.28
VALIDATOR_DEPS := opencv-python-headless send2trash jsonpickle humanfriendly python-dateutil requests
TEST_STAMP := $(VENV)/.installed-test

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

$(TEST_STAMP): $(STAMP) Makefile package.json package-lock.json
	$(PY) -m pip install --quiet --no-deps $(VALIDATOR)
	$(PY) -m pip install --quiet $(VALIDATOR_DEPS)
	npm ci --no-audit --no-fund --loglevel=error   # Azurite and cosmosdb-server, pinned
	touch $(TEST_STAMP)

pytest: $(TEST_STAMP)
	$(PY) -m pytest -q

test: typecheck lint pytest

clean:
	rm -rf $(VENV) demo_output
