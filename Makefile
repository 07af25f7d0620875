SHELL := /bin/bash
SIGNSERVER_HOME ?= $(CURDIR)/var
SIGNSERVER_PORT ?= 8080
SOAK_SECONDS ?= 600
CRASH_KILLS ?= 20
CRASH_STORE ?= postgresql
export SIGNSERVER_HOME SIGNSERVER_PORT

.PHONY: setup run test test-postgres crash-test soak bench

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/signserver init
	.venv/bin/signserver serve

# One worker per core (at most 2 here); each test file stays on one worker, so its servers start once.
test: setup
	.venv/bin/python -m pytest -q -n auto --dist loadfile

# The whole suite with PostgreSQL as the store of every data directory (the tests start their own server).
test-postgres: setup
	SIGNSERVER_TEST_STORE=postgresql .venv/bin/python -m pytest -q -n auto --dist loadfile

# SIGKILLs under load (CRASH_STORE=sqlite for the embedded store); the report goes to reports/crash-test.json.
crash-test: setup
	.venv/bin/python -m tests.reliability.crash_loop --kills $(CRASH_KILLS) --store $(CRASH_STORE) --report reports/crash-test.json

# Concurrency 32 for SOAK_SECONDS; the report goes to reports/soak.json.
soak: setup
	.venv/bin/python -m tests.reliability.soak --seconds $(SOAK_SECONDS) --concurrency 32 --report reports/soak.json

bench: setup
	.venv/bin/python -m bench
