PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: constraints demo test test-unit test-integration test-e2e test-fuzz system-packages bench-packages bench bench-scale soak clean

# constraints.txt pins every package to the versions the suite last passed with (a fresh clone
# installs exactly those); `make constraints` writes it again from this .venv after an upgrade.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,demo]'
	touch $(STAMP)

constraints: $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade -e '.[test,demo,flask]'
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

demo: $(STAMP)
	$(BIN)/hrp-cutover demo

system-packages:
	sh tools/setup/system_packages.sh

bench-packages:
	sh tools/setup/system_packages.sh bench

# Two workers (pytest-xdist), one per core of the CI machine, each with a PostgreSQL of its own.
# Property tests run their full example counts (profile thorough); test-unit runs a fifth (quick, the default).
test: $(STAMP) system-packages
	$(BIN)/python -m pytest --hypothesis-profile=thorough -n 2 --dist worksteal

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) system-packages
	$(BIN)/python -m pytest --hypothesis-profile=thorough tests/integration

test-e2e: $(STAMP) system-packages
	$(BIN)/python -m pytest --hypothesis-profile=thorough tests/e2e

test-fuzz: $(STAMP)
	$(BIN)/python -m pytest --hypothesis-profile=thorough tests/fuzz

bench: $(STAMP) bench-packages
	rm -rf artifacts/bench
	$(BIN)/python -m pytest -m bench -s --timeout=0 -o faulthandler_timeout=0 tests/bench
	$(BIN)/hrp-cutover bench

# Not in `make test` nor `make bench`: the operator's commands through the CLI at 100,000 and
# 1,000,000 races (HRP_SCALE_RACES="2000,20000" to try it small), pgloader on the same files;
# the Scale section of BENCHMARKS.md is written even when a command failed (the exit says so).
bench-scale: $(STAMP) bench-packages
	rm -rf artifacts/bench-scale
	$(BIN)/python -m tests.bench.scale; status=$$?; $(BIN)/hrp-cutover bench --scale-only; exit $$status

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -s --timeout=0 -o faulthandler_timeout=0 tests/soak tests/integration/test_move_model.py

clean:
	rm -rf $(VENV) .pytest_cache
