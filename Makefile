# Quick start: `make demo` (set up, then run the main job) and `make test` (set up, then the whole suite).
# Everything lives in .venv: the package with its dev tools and the ArangoDB client (`.[dev,arango]`:
# mypy and the store tests need it); the first run creates it, later runs reuse it while
# pyproject.toml is unchanged.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean test-redis7 test-arango

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,model,arango]'
	touch $@

demo: setup
	$(BIN)/s3 rules lint rulesets/default
	$(BIN)/s3 rules test rulesets/default
	$(BIN)/s3 demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check dsl s3 tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m tests.bench.bench_dsl
	$(BIN)/python -m tests.bench.bench_default_bundle --ref main

clean:
	rm -rf $(VENV) build dist *.egg-info

# The Redis contract suites on Debian's Redis 7 (the embedded binary is 6.2); needs apt.
test-redis7: setup
	command -v /usr/bin/redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)
	S3_REDIS_SERVER_BIN=/usr/bin/redis-server S3_TEST_REDIS7_BIN=/usr/bin/redis-server $(BIN)/pytest tests/s3/adapters -q

# The store contract suite (and the adapter's own tests) against a real ArangoDB; the user must
# be allowed to create databases (each run makes s3_test_<random> and drops it):
#   S3_TEST_ARANGO_URL=http://root:pw@host:8529 make test-arango
# Without a server `make test` runs the same suite on an in-memory stand-in (docs/operations.md).
test-arango: setup
	@test -n "$$S3_TEST_ARANGO_URL" || { echo "make test-arango: set S3_TEST_ARANGO_URL=http://user:pass@host:8529" >&2; exit 2; }
	S3_TEST_ARANGO_REQUIRED=1 $(BIN)/pytest tests/s3/adapters/test_store.py tests/s3/adapters/test_arango_http.py -q -rs -k arango
