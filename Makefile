# make demo: set up .venv and diagnose the built-in reference cases.
# make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cnndoctor-installed
export KERAS_BACKEND ?= torch

.PHONY: demo test setup bench clean chromium

setup: $(STAMP)

# torch first: pinned so that pip takes the local CPU build instead of a multi-GB CUDA one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cnndoctor demo

# The HTML report's test opens the pages in headless Chromium (Debian's package). Installed here
# when missing, only as root with apt-get; elsewhere tests/test_html.py skips its browser tests.
test: $(STAMP) chromium
	$(PY) -m pytest -q

chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	      echo "could not install chromium: the browser tests of tests/test_html.py will be skipped"; \
	  else \
	    echo "chromium not installed and cannot install it here (needs root and apt-get):" \
	         "the browser tests of tests/test_html.py will be skipped"; \
	  fi; \
	fi

bench: $(STAMP)
	$(PY) benchmarks/diagnosis_time.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
