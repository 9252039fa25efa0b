PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hrp-cutover demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	rm -rf artifacts/bench
	$(BIN)/python -m pytest -m bench -s tests/bench
	$(BIN)/hrp-cutover bench

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -s tests/soak

clean:
	rm -rf $(VENV) .pytest_cache
