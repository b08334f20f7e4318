# Two entry points for a fresh machine: `make demo` and `make test`. Both create (or reuse) .venv.
PYTHON ?= $(shell for p in python3 python3.12 python3.11 python3.10 python3.13; do $$p -c 'import sys, venv; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(STAMP): setup.py
	@test -n "$(PYTHON)" || { echo "need Python 3.10-3.13 with venv (e.g. apt-get install python3-venv)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/gld demo --output demo-output

test: install
	$(VENV)/bin/python -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache
