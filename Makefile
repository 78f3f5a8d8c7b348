# Two commands on a fresh machine:  `make up` runs the embedded fleet, `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/continuity up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

# Benchmarks print ratios against their anchors measured in the same run (restic/borg from Debian).
bench: $(STAMP)
	command -v restic >/dev/null && command -v borg >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq restic borgbackup)
	$(BIN)/python bench/backup_bench.py
	$(BIN)/python bench/failover_bench.py
	$(BIN)/python bench/heartbeat_scale_bench.py
	$(BIN)/python bench/pulse_throughput.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .continuity .pytest_cache
