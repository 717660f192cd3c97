# Dark Tower Global Controller: developer commands. Everything runs from .venv, created on first use.
# Commands that need the database go through darktower/devenv.py, which starts the embedded PostgreSQL
# and Redis when DATABASE_URL / REDIS_URL are unset and stops them afterwards.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEVENV := $(PY) -m darktower.devenv
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test migrate seed shell lint clean-data

help:
	@echo "make run         embedded PostgreSQL + Redis, migrations, demo data, dev superuser, all servers"
	@echo "make test        the whole test suite (PYTEST_ARGS='-k foo -x' to narrow it)"
	@echo "make migrate     apply migrations"
	@echo "make seed        load the demo data (manage.py seed_demo)"
	@echo "make shell       Django shell"
	@echo "make lint        ruff"
	@echo "make clean-data  delete .data (the embedded databases) once nothing runs on it"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "Python 3.11 or newer is required; '$(PYTHON)' is: $$($(PYTHON) --version 2>/dev/null || echo not found)" >&2; \
	  echo "Install it, or point at one: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls whenever a pin changes.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
	@touch $@

run: $(STAMP)
	$(DEVENV) run

# pytest exits 5 when it collected nothing: a broken test path must not look like a green build.
test: $(STAMP)
	@$(DEVENV) exec -- $(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5)" >&2; exit 1; fi; \
	exit $$status

migrate: $(STAMP)
	$(DEVENV) exec -- $(PY) manage.py migrate

seed: $(STAMP)
	$(DEVENV) exec -- $(PY) manage.py seed_demo

shell: $(STAMP)
	$(DEVENV) exec -- $(PY) manage.py shell

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-data: $(STAMP)
	$(DEVENV) clean-data
