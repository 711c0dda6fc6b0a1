# Two entry points a new user needs: `make demo` (the whole pipeline on built-in data,
# through the same Prefect flows operators deploy, embedded) and `make test`.
# Both build .venv from constraints.txt first, so nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/mlb-flows demo

test: install
	$(VENV)/bin/ruff check mlb storage flows tests
	$(VENV)/bin/mypy
	$(PY) -m pytest

bench: install
	$(VENV)/bin/mlb bench --quick

clean:
	rm -rf $(VENV) .mlb-work
