# The two Quickstart commands. Both create .venv with the Python on PATH (3.11+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/rotator demo

test: $(VENV)/.installed-test
	$(BIN)/ruff check rotator tests bench mkdocs_hooks.py
	$(BIN)/ruff format --check rotator tests bench mkdocs_hooks.py
	$(BIN)/mypy
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/) into site/; --strict as the test suite builds it.
docs: $(VENV)/.installed-test
	$(BIN)/mkdocs build --strict --site-dir site

# The benchmark (bench/results.md): about 20 minutes; BENCH_ARGS=--quick for a shorter run.
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) site rotator-demo .mypy_cache .ruff_cache .pytest_cache
