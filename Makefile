# Two commands on a fresh machine:  `make up` runs the embedded fleet, `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test test-deps lint bench clean venv

# A venv without a working pip (an interrupted first `make up`: "No module named pip" on every later
# run) is rebuilt from scratch instead of being reused.
venv:
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || { \
	  echo "$(VENV): no working pip in it (interrupted install?): rebuilding"; \
	  rm -rf $(VENV) && $(PY) -m venv $(VENV); }

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory venv PY=$(PY)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/continuity up

# What the tests need besides Python packages, from Debian (each test skips with a message where its
# package cannot be installed): chromium for the HTML report's browser test, redis-sentinel for the
# Sentinel test (tests/e2e/test_sentinel.py runs its own sentinels on free ports), postgresql for the
# backup recipe's real server, restic to judge our excludes and JSON against, prometheus for promtool.
test-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: tests/integration/test_report_html.py will skip its browser checks"
	@command -v redis-sentinel >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq redis-sentinel >/dev/null; } || \
	  echo "redis-sentinel not installed: tests/e2e/test_sentinel.py will skip"
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "postgresql not installed: tests/integration/test_backup_postgres.py will skip"
	@test -x /usr/sbin/sshd || \
	  { apt-get update -qq && apt-get install -y -qq openssh-server >/dev/null; } || \
	  echo "openssh-server not installed: the SFTP backend tests will skip"
	@command -v restic >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq restic >/dev/null; } || \
	  echo "restic not installed: tests/integration/test_backup_restic_compat.py will skip"
	@command -v promtool >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || \
	  echo "prometheus not installed: the alert rules are checked by the parser test only, not by promtool"

# Four pytest workers, a file each at a time: most of an end-to-end test is waiting on real processes, so
# four files in flight on 2 cores cut the wall time (measured with a CPU hog on both cores beside the suite:
# 1217 s with two workers, 874 s with four). Every test starts its own redis-server, workers and ports, and
# its processes are found (and checked for leaks) by its own temporary directory.
test: $(STAMP) test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 4 --dist loadfile --durations=15

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
