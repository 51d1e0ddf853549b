# Two entry points, each doing all set-up from a clean clone (Python 3.10+, no GPU needed):
#   make demo   - train teacher -> CD and CT on the embedded mini set, export, evaluate, vocode
#   make test   - the test suite (CPU, about 10 minutes on 2 cores)
#   make test-fast - the suite without the tests marked slow (long training runs, end-to-end pipelines)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash egs/mini/run.sh

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --junitxml=$(VENV)/junit.xml

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

clean:
	rm -rf $(VENV) exp runs
