SHELL := /bin/bash
SIGNSERVER_HOME ?= $(CURDIR)/var
SIGNSERVER_PORT ?= 8080
export SIGNSERVER_HOME SIGNSERVER_PORT

.PHONY: setup run test bench

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/signserver init
	.venv/bin/signserver serve

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m bench
