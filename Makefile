# churn-platform: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 needed)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the project with its dev tools

.PHONY: services
services: ## Start Redis and PostgreSQL if they are not running
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "starting redis-server"; \
		mkdir -p /var/lib/redis /var/log/redis; \
		redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
			--dir /var/lib/redis --logfile /var/log/redis/ci.log; \
		for i in $$(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done; }
	@pg_isready -h 127.0.0.1 -p 5432 -q || { echo "starting postgresql"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
		for i in $$(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q \
		&& echo "services: redis and postgresql are up"

.PHONY: demo
demo: $(STAMP) ## Run the platform end to end on embedded defaults (small data, few trials)
	$(BIN)/python -m bench.demo

.PHONY: test
test: $(STAMP) services ## Run the whole test suite against real Redis, PostgreSQL, Feast and MLflow
	$(BIN)/python -m pytest

.PHONY: lint
lint: $(STAMP) ## ruff format check, ruff lint and mypy on the packages
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

.PHONY: format
format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: bench
bench: $(STAMP) services ## Run the benchmarks (prints figures; slow)
	$(BIN)/python bench/materialize.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/drift.py

.PHONY: clean
clean: ## Remove local data, stores and caches (keeps .venv)
	rm -rf data/* .pytest_cache .mypy_cache .ruff_cache
	@touch data/.gitkeep
