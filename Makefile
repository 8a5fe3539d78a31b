# churn-platform: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
comma := ,
# requirements.lock pins every package (with its hashes) of the project and these extras, for
# Python 3.11 on Linux x86_64: `make install` and CI install exactly it; `make lock` refreshes it.
# The spark extra (pyspark, ~450 MB) is in: the test suite runs the spark profile.
LOCK := requirements.lock
LOCK_EXTRAS := dev,spark,workflow
# The Python of this machine and CI (pymdown-extensions, under mkdocs-material, needs >= 3.11.5).
LOCK_PYTHON := 3.11.7
# `make install EXTRAS=dev` leaves spark (and Dagster) out on a machine that never runs them: it
# installs the lock's versions of what those extras need, without the hash check (pip checks
# hashes only for a whole hashed file, and the project itself cannot carry one).
EXTRAS ?= $(LOCK_EXTRAS)
export MLFLOW_DISABLE_TELEMETRY := true

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# `python -m pip`, not bin/pip: a copied .venv keeps the old path in its scripts' first line.
$(STAMP): $(LOCK) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11.5 needed)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(EXTRAS),$(LOCK_EXTRAS))
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
else
	$(BIN)/python -m pip install --quiet -c <(sed -e '/--hash=/d' -e 's/ \\$$//' $(LOCK)) -e ".[$(EXTRAS)]"
endif
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install requirements.lock (dev tools, spark, Dagster), then the project

# uv resolves from PyPI alone (--no-config: no index or uv.toml of the machine) for the target
# Python and platform, whatever runs it, in seconds; pip-tools would resolve through pip and
# its local configuration. An existing lock's versions are kept unless pyproject.toml needs
# others (LOCK_ARGS=--upgrade takes the newest). pip's own constraint files, where the machine
# has any, bind the lock too (`pip install` would refuse a lock that breaks them); they come in
# on stdin so that no path of this machine is written into the lock.
LOCK_ARGS ?=
.PHONY: lock
lock: ## Refresh requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade: newest versions)
	@[ -x $(BIN)/uv ] || $(MAKE) install
	@# Into a copy (uv takes its versions as preferences), replacing the lock only if it
	@# changed: an unchanged lock keeps the install stamp valid.
	@if [ -f $(LOCK) ]; then cp $(LOCK) $(LOCK).new; fi
	$(BIN)/python -m pip config list \
		| sed -n -E "s/^(:env:|global|install)\.constraint='(.*)'$$/\2/p" | xargs -r cat \
		| $(BIN)/uv pip compile pyproject.toml $(patsubst %,--extra %,$(subst $(comma), ,$(LOCK_EXTRAS))) \
			--python-version $(LOCK_PYTHON) --python-platform x86_64-unknown-linux-gnu \
			--generate-hashes --no-config --default-index https://pypi.org/simple --constraints - \
			--custom-compile-command "make lock" --quiet $(LOCK_ARGS) --output-file $(LOCK).new \
		|| { rm -f $(LOCK).new; exit 1; }
	@if cmp -s $(LOCK).new $(LOCK); then rm $(LOCK).new; echo "$(LOCK): unchanged"; \
	else mv $(LOCK).new $(LOCK); echo "$(LOCK): updated (\`make install\` installs it)"; fi

# The orchestrator (Dagster) is in the lock: `make install` installs it. Kept as a name.
.PHONY: workflow-install
workflow-install: install ## Same as `make install` (Dagster is in requirements.lock)

WORKFLOW_PORT ?= 3000
DAGSTER_HOME ?= $(CURDIR)/data/dagster

.PHONY: workflow
workflow: $(STAMP) ## Start the schedule locally: Dagster UI + scheduler, http://127.0.0.1:3000 (WORKFLOW_PORT)
	@mkdir -p $(DAGSTER_HOME) && cp workflow/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -m workflow.definitions -h 127.0.0.1 -p $(WORKFLOW_PORT)

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

# The demo: production profile when a Redis answers, else the embedded one (SQLite).
DEMO_PROFILE = $(shell python3 -c "import socket; socket.create_connection(('127.0.0.1', 6379), 1)" 2>/dev/null && echo production || echo embedded)
DEMO_PORT ?= 8765
DEMO_TRIALS ?= 6
DEMO_USERS ?= 2000
# Activity events per user and hour of the streamed history (about 1.2 a day; 0.3 is
# `churn generate`'s default): enough for the windows to carry the churners' fading activity.
DEMO_EVENTS_PER_HOUR ?= 0.05
# The activity stream runs on the production profile (one Redis: the stream and the online
# store `churn stream` writes). The embedded profile has no Redis and the worker does not
# write a Redis Cluster; on those, and on the spark profile's demo (kept to churn_v1), the
# demo skips the stream and the churn_v2 model and says so.
DEMO_STREAM = $(if $(filter production,$(DEMO_PROFILE)),yes,no)
DEMO_EVENTS = $(if $(filter yes,$(DEMO_STREAM)),--events --events-per-hour $(DEMO_EVENTS_PER_HOUR) --publish)
DEMO_URL := http://127.0.0.1:$(DEMO_PORT)
DEMO_BASE_END = $(shell date -u -d '7 days ago' +%F)
DEMO_TODAY = $(shell date -u +%F)
# The shifted week ends at the demo's minute, not at midnight: its activity then reaches the
# moment it is served, as a live stream's would (a week ending at 00:00 would serve every
# user's last hour as silent to a churn_v2 champion).
DEMO_NOW = $(shell date -u +%FT%H:%M)
CHURN := $(BIN)/churn
REPORT_DIR := $(CURDIR)/data/monitoring/demo-report

# The demo keeps its online rows in a Redis database of its own, away from db 0.
DEMO_REDIS_URL ?= 127.0.0.1:6379,db=1

.PHONY: demo
demo: export CHURN_REDIS_URL = $(DEMO_REDIS_URL)
demo: $(STAMP) ## Run the platform end to end on embedded defaults (small data, few trials)
	@if [ "$(DEMO_PROFILE)" = production ]; then echo "demo: Redis answers on 127.0.0.1:6379: production profile (Redis online store)"; \
	elif [ "$(DEMO_PROFILE)" = cluster ]; then echo "demo: cluster profile (Redis Cluster online store on $$CHURN_REDIS_CLUSTER_NODES)"; \
	elif [ "$(DEMO_PROFILE)" = spark ]; then echo "demo: spark profile (Spark offline store on $$CHURN_SPARK_MASTER, Redis online store)"; \
	else echo "demo: no Redis answers on 127.0.0.1:6379: using the embedded profile (SQLite online store)"; fi
	@echo "== 0. fresh start: the demo resets data/ and tears down the Feast project's online rows"
	rm -rf data/raw data/offline data/quarantine data/registry.db data/registry.spark.db data/registry.cluster.db data/spark-staging data/online_store.db data/mlflow data/predictions data/monitoring data/scores
	@# Online rows outlive data/ (another checkout's demo may have written newer ones): apply
	@# the definitions and let Feast tear the project down, then start from nothing. The
	@# sources are not validated: the offline tables were just removed (Spark checks them).
	@CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(BIN)/python -c "from core.settings import FeastSettings; \
		from core.feast_store import run_feast_cli; s = FeastSettings(); \
		run_feast_cli(s, 'apply', '--skip-source-validation'); run_feast_cli(s, 'teardown')"
	rm -f data/registry.db data/registry.spark.db data/registry.cluster.db data/online_store.db
	@# The activity stream, its dead letters and outbox live in the demo's Redis database too.
	@[ "$(DEMO_STREAM)" = no ] || $(BIN)/python -c "from redis import Redis; \
		from core.feast_adapter.store import redis_client_arguments; from core.settings import FeastSettings; \
		from materialize.stream.settings import StreamSettings; s = StreamSettings(); \
		r = Redis(**redis_client_arguments(FeastSettings().redis_url)); \
		r.delete(s.key, s.dead_letter_key, *r.keys(s.key + ':outbox:*'))"
	@if [ "$(DEMO_STREAM)" = yes ]; then echo "== 1. raw events and activity: $(DEMO_USERS) users, 60 days up to $(DEMO_BASE_END), the activity published to the stream"; \
	else echo "== 1. raw events: $(DEMO_USERS) users, 60 days up to $(DEMO_BASE_END) (no activity stream or churn_v2 on the $(DEMO_PROFILE) profile)"; fi
	$(CHURN) generate --users $(DEMO_USERS) --days 60 --end $(DEMO_BASE_END) --out data/raw/events.parquet $(DEMO_EVENTS)
	@# The first historical load: rows were available to serving as they happened (back-fill).
	$(CHURN) ingest --backfill data/raw/events.parquet
	@echo "== 2. feature repo and online store"
	CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(CHURN) apply
	CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(CHURN) materialize
	CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(CHURN) skew-check --sample 200 --seed 1
	@if [ "$(DEMO_STREAM)" = yes ]; then set -e; \
		echo "== 2b. the stream: churn stream drains the published activity into user_activity, online and offline"; \
		CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(CHURN) stream --until-idle; \
		CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(CHURN) skew-check --service churn_v2 --sample 200 --seed 1 --at $(DEMO_BASE_END); fi
	@echo "== 3. training: $(DEMO_TRIALS) Optuna trials, gate 0.78, champion/challenger"
	set -o pipefail; CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(CHURN) train --trials $(DEMO_TRIALS) | tee data/train-churn_v1.log
	@if [ "$(DEMO_STREAM)" = yes ]; then set -eo pipefail; \
		echo "== 3b. churn_v2 (churn_v1 + the streamed windows) on the same labels and test window: champion only if it beats churn_v1 there"; \
		status=0; CHURN_FEAST_PROFILE=$(DEMO_PROFILE) $(CHURN) train --feature-service churn_v2 --trials $(DEMO_TRIALS) | tee data/train-churn_v2.log || status=$$?; \
		[ $$status -eq 0 ] || [ $$status -eq 3 ] || { echo "demo: churn train (churn_v2) failed ($$status)"; exit $$status; }; \
		echo "demo: test ROC AUC on the same test window: churn_v1 $$(sed -n 's/^test ROC AUC //p' data/train-churn_v1.log), churn_v2 $$(sed -n 's/^test ROC AUC //p' data/train-churn_v2.log)"; \
		echo "demo: the gate's pick: $$(tail -n 1 data/train-churn_v2.log)"; fi
	@echo "== 4. serving on $(DEMO_URL), then drift on a shifted week, the harm check, hot reload"
	@set -euo pipefail; \
	export CHURN_FEAST_PROFILE=$(DEMO_PROFILE) CHURN_SERVING_POLL_INTERVAL_S=2; \
	$(CHURN) serve --port $(DEMO_PORT) --log-level warning & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null || true' EXIT; \
	for i in $$(seq 360); do curl -sf $(DEMO_URL)/ready >/dev/null && break; sleep 0.5; done; \
	curl -sf $(DEMO_URL)/ready >/dev/null || { echo "demo: the service did not become ready"; exit 1; }; \
	if [ "$(DEMO_STREAM)" = yes ]; then echo "(a churn_v2 champion reads the activity windows at the request time: the streamed history ends 7 days ago, so they are empty until step 5 streams the week)"; fi; \
	echo "POST /predict user 1:"; curl -s -X POST $(DEMO_URL)/predict -H 'content-type: application/json' -d '{"user_id": 1}'; echo; \
	echo "POST /predict unknown user 999999:"; curl -s -X POST $(DEMO_URL)/predict -H 'content-type: application/json' -d '{"user_id": 999999}'; echo; \
	echo "POST /predict user 1 with \"explain\": true (each feature's value and contribution):"; curl -s -X POST $(DEMO_URL)/predict -H 'content-type: application/json' -d '{"user_id": 1, "explain": true}'; echo; \
	echo "POST /predict/batch users 1-5:"; curl -s -X POST $(DEMO_URL)/predict/batch -H 'content-type: application/json' -d '{"user_ids": [1, 2, 3, 4, 5]}'; echo; \
	echo "== 5. a shifted week (feature_1 +1.5 SD) arrives"; \
	$(CHURN) generate --users $(DEMO_USERS) --days 7 --end $(DEMO_NOW) --shift feature_1=1.5 --out data/raw/shifted.parquet $(DEMO_EVENTS); \
	echo "(the shifted week stands for seven daily ingests that arrived on time: --backfill declares"; \
	echo " its rows available at their event times, so drift and retraining see them on their own days)"; \
	$(CHURN) ingest --backfill data/raw/shifted.parquet; \
	$(CHURN) materialize --start $(DEMO_BASE_END); \
	if [ "$(DEMO_STREAM)" = yes ]; then \
		echo "(and the week's activity, generated with it, is streamed: the windows served are current)"; \
		$(CHURN) stream --until-idle; fi; \
	echo "== 6. drift job: drift alerts; retraining only on estimated or realized harm"; \
	status=0; $(CHURN) drift --out $(REPORT_DIR) --retrain --trials $(DEMO_TRIALS) || status=$$?; \
	[ $$status -eq 0 ] || [ $$status -eq 4 ] || { echo "demo: churn drift failed ($$status)"; exit $$status; }; \
	sleep 4; \
	echo "POST /predict user 1 (after the drift job; model_version shows the serving champion):"; \
	curl -s -X POST $(DEMO_URL)/predict -H 'content-type: application/json' -d '{"user_id": 1}'; echo; \
	echo "POST /predict/batch every user of the shifted week, 100 a request (feeds the prediction log):"; \
	for first in $$(seq 1 100 $(DEMO_USERS)); do \
		curl -s -X POST $(DEMO_URL)/predict/batch -H 'content-type: application/json' \
			-d "{\"user_ids\": [$$(seq -s, $$first $$((first + 99)))]}"; echo; \
	done | $(BIN)/python -c "import json,sys; r=[json.loads(l) for l in sys.stdin if l.strip()]; print(sum(len(x['predictions']) for x in r), 'predictions,', sum(len(x['errors']) for x in r), 'per-user errors')"; \
	kill $$server; wait $$server || true; trap - EXIT; \
	echo "== 7. the shifted week's performance estimated from the served probabilities, before its labels"; \
	status=0; $(CHURN) estimate --window 1d --out $(REPORT_DIR)/estimate || status=$$?; \
	[ $$status -eq 0 ] || [ $$status -eq 4 ] || { echo "demo: churn estimate failed ($$status)"; exit $$status; }; \
	echo "== 8. the labels land: the realized figures beside the estimate"; \
	status=0; $(CHURN) evaluate --window 1d || status=$$?; \
	[ $$status -ne 1 ] || { echo "demo: churn evaluate failed"; exit 1; }; \
	echo "== 9. batch scoring: every user now, from the offline store, with the reasons"; \
	$(CHURN) score --out data/scores/demo.parquet --show 10; \
	echo "demo: done. Drift report: $(REPORT_DIR)/drift.html (JSON: $(REPORT_DIR)/drift.json)"; \
	echo "demo: MLflow: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/data/mlflow/mlflow.db"

# The same demo on the spark profile: Feast's Spark offline store (SparkSource over the same
# tables), Redis online store. Spark runs as local[2] unless SPARK_MASTER names a cluster.
SPARK_MASTER ?= local[2]

.PHONY: demo-spark
demo-spark: export CHURN_SPARK_MASTER = $(SPARK_MASTER)
demo-spark: $(STAMP) ## Run the demo on the spark profile (SPARK_MASTER=spark://host:7077 for a cluster; needs Java 17 and Redis)
	@python3 -c "import socket; socket.create_connection(('127.0.0.1', 6379), 1)" 2>/dev/null \
		|| { echo "demo-spark: the spark profile's online store is Redis: start it (make services)"; exit 1; }
	@$(BIN)/python -c "import pyspark" 2>/dev/null || { echo "demo-spark: pyspark missing: make install (EXTRAS includes spark)"; exit 1; }
	$(MAKE) demo DEMO_PROFILE=spark

# The same demo on the cluster profile: a three-master Redis Cluster started on free
# loopback ports for the demo (state in data/redis-cluster), stopped after it.
.PHONY: demo-cluster
demo-cluster: $(STAMP) ## Run the demo on the cluster profile (a local three-master Redis Cluster, started and stopped)
	@set -e; nodes=$$($(BIN)/python -m tests.utils.redis_cluster start data/redis-cluster); \
	trap '$(BIN)/python -m tests.utils.redis_cluster stop data/redis-cluster' EXIT; \
	$(MAKE) demo DEMO_PROFILE=cluster CHURN_REDIS_CLUSTER_NODES=$$nodes

# `make test` runs on TEST_WORKERS pytest-xdist workers (one per core here; 0: one process).
# Each test module is one unit of work (its fixtures are built on one worker), the Spark
# tests are one unit on the run's one cluster, longest first (tests/conftest.py).
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)
# COVERAGE_SUBPROCESSES=1 also measures the `churn`/`feast` processes the tests start.
COVERAGE_CONFIG = $(if $(COVERAGE_SUBPROCESSES),tests/coverage-subprocesses.toml,pyproject.toml)

.PHONY: test
test: $(STAMP) services ## Run the whole suite (unit and service-backed) in random order, on parallel workers, with coverage
	$(BIN)/python -m pytest $(XDIST) --cov --cov-config=$(COVERAGE_CONFIG) \
		--cov-report=term:skip-covered --cov-report=html

.PHONY: test-unit
test-unit: $(STAMP) ## Run only the fast in-process tests (marker `unit`; no services needed)
	$(BIN)/python -m pytest -m unit

.PHONY: coverage
coverage: $(STAMP) ## Show the coverage the last `make test` measured (per module; HTML in htmlcov/)
	@test -f .coverage || { echo "coverage: no data yet: run make test"; exit 1; }
	$(BIN)/coverage report
	$(BIN)/coverage html --quiet && echo "coverage: htmlcov/index.html"

.PHONY: lint
lint: $(STAMP) ## ruff format check, ruff lint, mypy, the layering contract (import-linter), the checkpoints
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@# One checkpoint per safety rule: nothing else loads a model or opens the feature store.
	$(BIN)/python -m pytest -q -p no:randomly -p no:cacheprovider tests/core/test_checkpoints.py

.PHONY: format
format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The documentation site (MkDocs, Material theme): docs/ and mkdocs.yml. The configuration
# reference is generated from the settings classes at build time (docs/hooks/).
DOCS_PORT ?= 8001

.PHONY: docs docs-serve
# Material prints a banner about its successor on every build; nothing here acts on it.
docs docs-serve: export NO_MKDOCS_2_WARNING = 1
docs: $(STAMP) ## Build the documentation site into site/ (--strict: a warning fails it)
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP) ## Serve the documentation with live reload, http://127.0.0.1:8001 (DOCS_PORT)
	$(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

.PHONY: bench
bench: $(STAMP) services ## Run the benchmarks (prints figures; slow)
	$(BIN)/python -m bench.materialize
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.serve
	$(BIN)/python -m bench.drift
	$(BIN)/python -m bench.score
	$(BIN)/python -m bench.explain_latency
	$(BIN)/python -m bench.hot_swap
	$(BIN)/python -m bench.half_saturation
	$(BIN)/python -m bench.estimate
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.soak

.PHONY: clean
clean: ## Remove local data, stores and caches (keeps .venv)
	rm -rf data/* .pytest_cache .mypy_cache .ruff_cache
	@touch data/.gitkeep
