# The project's entry points. `make up` and `make test` work on a fresh Debian machine with Python 3.11+
# and Go: they install what is missing first (system packages need root).

VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: help deps up down status test test-unit test-cluster lint format demo demo-down kind-e2e kind-down clean

help:
	@echo "make demo        the platform end to end: local cluster, helm install, train, serve, predict"
	@echo "make demo-down   remove the demo and stop the local platform"
	@echo "make up          bring the local platform up (builds its binaries on first run)"
	@echo "make test        every test tier: unit, cluster, platform, end to end"
	@echo "make test-unit   the unit tier alone (no cluster, no network)"
	@echo "make lint        ruff and mypy"
	@echo "make down        stop the local platform and remove its state"
	@echo "make kind-e2e    the demo on a kind cluster (Docker); make kind-down removes it"

$(BIN)/mlplatform: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

deps: $(BIN)/mlplatform
	@bash .ci/system-packages

up: deps
	$(BIN)/mlplatform local up

down: $(BIN)/mlplatform
	$(BIN)/mlplatform local down

status: $(BIN)/mlplatform
	$(BIN)/mlplatform local status

test: deps
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(BIN)/mlplatform
	$(BIN)/pytest -m "not cluster and not platform and not e2e" $(PYTEST_ARGS)

test-cluster: deps
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

lint: $(BIN)/mlplatform
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/mlplatform
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The chart's PostgreSQL and MinIO run as pods on the local node, as on any cluster: the local platform
# comes up without its own MLflow stack.
demo: deps
	$(BIN)/mlplatform local up --no-stack
	eval "$$($(BIN)/mlplatform local env)" && $(BIN)/mlplatform demo $(DEMO_ARGS)

demo-down: $(BIN)/mlplatform
	-eval "$$($(BIN)/mlplatform local env)" && $(BIN)/mlplatform demo --down
	$(BIN)/mlplatform local down

kind-e2e:
	hack/kind-e2e.sh $(DEMO_ARGS)

kind-down:
	hack/kind-e2e.sh --down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
