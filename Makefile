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
# an independent reading of Camtrap DP 1.0 (dataclasses per table) that export_camtrap_dp is
# checked against; --no-deps: it pins pandas<3, and only its CSV readers are used
CAMTRAPDP := camtrapdp==0.1.0
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint typecheck pytest venv clean

venv: $(STAMP)

# classification/_jpegregion.c (region decoding of JPEGs for crop_detections) builds
# against libjpeg-turbo's headers; on Debian/Ubuntu they are installed here when
# missing and allowed (root). Without them the extension is skipped: crops stay
# exact, only slower.
JPEG_HEADERS := /usr/include/jpeglib.h

$(STAMP): setup.cfg pyproject.toml setup.py classification/_jpegregion.c
	@test -f $(JPEG_HEADERS) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get update -qq && apt-get install -y -qq libjpeg-dev; } >/dev/null; } \
	  || echo "warning: no libjpeg-turbo headers; crop_detections decodes whole photos" >&2
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,openvino,onnxruntime]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash demo/run_demo.sh

typecheck: $(STAMP)
	$(PY) -m mypy -p classification -p detection -p data_management

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports   # scripts -> library modules -> utils, one way (setup.cfg)

$(TEST_STAMP): $(STAMP) Makefile package.json package-lock.json
	$(PY) -m pip install --quiet --no-deps $(VALIDATOR)
	$(PY) -m pip install --quiet $(VALIDATOR_DEPS)
	$(PY) -m pip install --quiet --no-deps $(CAMTRAPDP)
	npm ci --no-audit --no-fund --loglevel=error   # Azurite and cosmosdb-server, pinned
	@# the reports are checked in a real headless browser: Debian's chromium and its driver
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	            chromium chromium-driver; } >/dev/null; } \
	  || echo "warning: no chromium/chromedriver; the report tests will fail" >&2
	touch $(TEST_STAMP)

pytest: $(TEST_STAMP)
	$(PY) -m pytest -q

test: typecheck lint pytest

clean:
	rm -rf $(VENV) demo_output
