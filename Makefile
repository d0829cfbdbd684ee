# make demo: set up .venv and diagnose the built-in reference cases.
# make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cnndoctor-installed
export KERAS_BACKEND ?= torch

.PHONY: demo test setup bench clean

setup: $(STAMP)

# torch first: pinned so that pip takes the local CPU build instead of a multi-GB CUDA one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cnndoctor demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/diagnosis_time.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
