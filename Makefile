PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration test-e2e test-fuzz system-packages bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hrp-cutover demo

system-packages:
	sh tools/setup/system_packages.sh

test: $(STAMP) system-packages
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP) system-packages
	$(BIN)/python -m pytest tests/e2e

test-fuzz: $(STAMP)
	$(BIN)/python -m pytest tests/fuzz

bench: $(STAMP)
	rm -rf artifacts/bench
	$(BIN)/python -m pytest -m bench -s tests/bench
	$(BIN)/hrp-cutover bench

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -s tests/soak

clean:
	rm -rf $(VENV) .pytest_cache
