# Dark Tower Global Controller: developer commands. Everything runs from .venv, created on first use.
# Commands that need the database go through tools/devenv.py, which starts the embedded PostgreSQL
# and Redis when DATABASE_URL / REDIS_URL are unset and stops them afterwards.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEVENV := $(PY) -m tools.devenv
PYTEST_ARGS ?=
# pytest-xdist workers (0: one process). Each worker has its own test database and Redis database (tests/conftest.py);
# the tests that start heavy processes share one xdist group, so they run one at a time on one worker.
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help run test migrate seed shell lint clean-data proto

help:
	@echo "make run         embedded PostgreSQL + Redis, migrations, demo data, dev superuser, all servers"
	@echo "make test        the whole test suite (PYTEST_ARGS='-k foo -x' to narrow it, PYTEST_WORKERS=0 for one process)"
	@echo "make migrate     apply migrations"
	@echo "make seed        load the demo data (manage.py seed_demo)"
	@echo "make shell       Django shell"
	@echo "make lint        ruff, mypy, import contracts (lint-imports)"
	@echo "make squawk      squawk over the SQL of every migration newer than the baseline (tools/squawk_migrations.py)"
	@echo "make proto       regenerate dark_tower/ (Python gRPC code) from proto/"
	@echo "make bench       the benchmarks (bench/), each on a scratch database; rewrites bench/RESULTS.md"
	@echo "                 (builds bench/build/stream_client, C++, installing gRPC C++ from Debian if missing)"
	@echo "make clean-data  delete .data (the embedded databases) once nothing runs on it"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "Python 3.11 or newer is required; '$(PYTHON)' is: $$($(PYTHON) --version 2>/dev/null || echo not found)" >&2; \
	  echo "Install it, or point at one: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	@echo "Creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV)

# Reinstalls whenever a pin changes. pip's output goes to a log, whose last lines are shown if it fails.
PIP_LOG := $(VENV)/pip-install.log
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	@echo "Installing the pinned requirements into $(VENV) (a first install takes 1-2 minutes; log: $(PIP_LOG))"
	@$(PY) -m pip install --disable-pip-version-check --progress-bar off -r requirements-dev.txt >$(PIP_LOG) 2>&1 || { \
	  echo "pip install failed; the last lines of $(PIP_LOG):" >&2; tail -n 25 $(PIP_LOG) >&2; exit 1; }
	@echo "Requirements installed."
	@touch $@

run: $(STAMP)
	$(DEVENV) run

# pytest exits 5 when it collected nothing: a broken test path must not look like a green build.
test: $(STAMP)
	@$(DEVENV) exec -- $(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5)" >&2; exit 1; fi; \
	exit $$status

migrate: $(STAMP)
	$(DEVENV) exec -- $(PY) manage.py migrate

seed: $(STAMP)
	$(DEVENV) exec -- $(PY) manage.py seed_demo

shell: $(STAMP)
	$(DEVENV) exec -- $(PY) manage.py shell

# mypy's Django plugin imports the settings: DEBUG=1 as for every target, no database needed.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	DEBUG=$${DEBUG:-1} $(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean-data: $(STAMP)
	$(DEVENV) clean-data

# squawk over `sqlmigrate` of each migration newer than the baseline;
# tests/darktower/migrations/test_squawk_migrations.py runs the same check in `make test`.
.PHONY: squawk
squawk: $(STAMP)
	$(DEVENV) exec -- $(PY) tools/squawk_migrations.py

# The gRPC contract: proto/dark_tower/**.proto -> the importable package dark_tower/ (checked in).
# tests/controllers/grpc/test_proto_generated.py runs this with PROTO_OUT=<tmp> and fails when the checked-in code is
# stale.
PROTO_OUT ?= .
PROTO_FILES := proto/dark_tower/internal/v1/internal.proto
proto: | $(PY)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
	  --grpc_python_out=$(PROTO_OUT) $(PROTO_FILES)
	@for package in dark_tower dark_tower/internal dark_tower/internal/v1; do touch $(PROTO_OUT)/$$package/__init__.py; done

# Benchmarks (bench/): each creates and drops its own scratch database on the same PostgreSQL server,
# prints a table and writes bench/results/<name>.json; then bench/RESULTS.md is rendered. Never part of `make test`.
.PHONY: bench bench-client-deps
STREAM_CLIENT := bench/build/stream_client
bench: $(STAMP) $(STREAM_CLIENT)
	$(DEVENV) exec -- $(PY) -m bench.run_all

# Bench 1's fleet of heartbeat streams comes from a C++ client (bench/stream_client.cc says why), built against
# gRPC C++ from Debian's packages: installed here when missing (as root), or named for whoever can install them.
STREAM_CLIENT_PROTO := bench/build/dark_tower/internal/v1/internal
$(STREAM_CLIENT): bench/stream_client.cc $(PROTO_FILES)
	@pkg-config --exists grpc++ protobuf && command -v grpc_cpp_plugin >/dev/null || $(MAKE) --no-print-directory bench-client-deps
	@mkdir -p bench/build
	protoc -Iproto --cpp_out=bench/build --grpc_out=bench/build \
	  --plugin=protoc-gen-grpc="$$(command -v grpc_cpp_plugin)" $(PROTO_FILES)
	$(CXX) -O2 -std=c++17 -Ibench/build bench/stream_client.cc $(STREAM_CLIENT_PROTO).pb.cc \
	  $(STREAM_CLIENT_PROTO).grpc.pb.cc -o $@ $$(pkg-config --cflags --libs grpc++ protobuf) -lpthread

BENCH_CLIENT_PACKAGES := g++ pkg-config protobuf-compiler protobuf-compiler-grpc libgrpc++-dev libprotobuf-dev
bench-client-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q $(BENCH_CLIENT_PACKAGES); \
	else \
	  echo "bench/stream_client.cc needs gRPC C++: install $(BENCH_CLIENT_PACKAGES) (Debian names)" >&2; exit 1; \
	fi
