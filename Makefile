# zasync -- make run | make cluster | make demo | make test | make bench | make lint | make docs
# Each target creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help run demo test test-fast lint format bench clean cluster dist docs

help:
	@echo "make run     - Plone 6 with zasync on http://localhost:8080/Plone (worker in-process)"
	@echo "make cluster - ZEO server, Plone instance on :8080 and two workers (examples/)"
	@echo "make demo    - start a worker on ./var/Data.fs and run a demo batch"
	@echo "make test    - lint, then the whole test suite"
	@echo "make test-fast - the tests in this process (no workers, CLI runs, Plone, browser)"
	@echo "make bench   - the benchmark workloads (QUICK=1 for a short run)"
	@echo "make lint    - ruff format --check, ruff check and mypy"
	@echo "make dist    - build the sdist and the wheel in dist/ and check them (twine)"
	@echo "make docs    - the documentation site in docs/_build/html (warnings are errors)"

# examples/first_job: the add-on of docs/first-job.md, which make run installs
# in its site (and tests/plone/test_first_job.py tests).
$(STAMP): pyproject.toml constraints.txt examples/first_job/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,zeo,relstorage,plone]' \
		-e examples/first_job
	touch $(STAMP)

# Plone on ./var/plone (site created on the first start); Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python examples/run.py

# The ZEO set-up of examples/cluster on ./var/cluster; Ctrl-C stops it all.
cluster: $(STAMP)
	$(BIN)/python examples/cluster.py

# The core engine alone: a worker and a demo batch on ./var/Data.fs.
demo: $(STAMP)
	$(BIN)/python -m zasync demo --db var/Data.fs

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks examples tools
	$(BIN)/ruff check src tests benchmarks examples tools
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything but the tests that start other processes, drive a browser or
# build a Plone site: under a minute. Without lint, for the edit-test loop.
# tests/plone is not even collected (importing Plone takes seconds).
FAST_TESTS := not slow and not plone and not multiprocess and not browser

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "$(FAST_TESTS)" --ignore=tests/plone $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick,)

# The sdist and the wheel, as they would be published, checked by twine.
DIST_STAMP := $(VENV)/.dist-installed

$(DIST_STAMP): $(STAMP)
	$(BIN)/pip install -q build twine
	touch $(DIST_STAMP)

dist: $(DIST_STAMP)
	rm -rf dist
	$(BIN)/python -m build
	$(BIN)/twine check --strict dist/*

# The documentation site: docs/*.md (MyST) and the API reference from the
# docstrings. -W: a warning (a broken link, a docstring autodoc cannot
# read) fails the build; -n: so does a reference to nothing.
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -b html -W --keep-going -n -q docs docs/_build/html
	@echo "docs/_build/html/index.html"

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache dist docs/_build
