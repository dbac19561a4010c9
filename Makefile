# Both targets work on a fresh machine with only Python 3.11: they create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,mcp,dask]'
	touch $@

install: $(BIN)/.installed

demo: install  ## the main job: an offline LLM map-reduce over docs/ (echo provider), no API keys
	$(BIN)/fanflow run examples/demo-llm.json --timeline demo-output/timeline.html

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: install lint  ## ruff, mypy on src/, then the whole suite
	$(BIN)/python -m pytest

bench: install  ## side-by-side benchmarks (minutes); writes bench/results.md
	$(BIN)/python bench/suite.py

clean:
	rm -rf $(VENV) .pytest_cache .fanflow demo-output
