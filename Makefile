# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench soak figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sd-watchdog demo

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check watchdog tests bench
	$(BIN)/ruff format --check watchdog tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/pytest --cov --cov-report=term

# Benchmarks: ratios against baselines measured in the same run; writes docs/performance.md.
bench: $(STAMP)
	$(BIN)/python -m bench

# The long fault variants (many SIGKILLs, thousands of cycles); not part of `make test`.
soak: $(STAMP)
	SD_RECORD_FIGURES=1 $(BIN)/pytest -m slow -p no:cacheprovider --timeout 1800

# Re-measure the figures of docs/reliability-figures-part1.md (the default fault tests).
figures: $(STAMP)
	SD_RECORD_FIGURES=1 $(BIN)/pytest -p no:cacheprovider tests/test_faults.py tests/test_properties.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage*
