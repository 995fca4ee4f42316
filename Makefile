# Thinkpool: `make run` for the embedded default, `make test` for the whole suite.
SHELL := /bin/bash
PY := .venv/bin/python
PORT ?= 8000
export DEBUG ?= 1

.PHONY: run test test-sqlite test-postgres lint format migrations-check bench clean

# The system packages a target needs (scripts/system-deps.sh): installed when this machine lets
# us (root with apt-get), else a stop at once with the command to run. First, so that a missing
# package is said before minutes of installing and testing.
.PHONY: system-deps-run system-deps-test
system-deps-run:
	@bash scripts/system-deps.sh run
system-deps-test:
	@bash scripts/system-deps.sh test

.venv/installed: pyproject.toml
	@bash scripts/system-deps.sh venv
	test -d .venv || python3 -m venv .venv
	# torch==2.13.0 first: on these machines that release is a CPU wheel on local disk. A bare
	# `torch` (or one from plain PyPI) is a CUDA build of several GB.
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q "torch==2.13.0"
	.venv/bin/pip install -q -e ".[server,worker,models,dev]"
	touch $@

run: system-deps-run .venv/installed
	@bash scripts/run.sh

test: system-deps-test .venv/installed test-sqlite test-postgres

test-sqlite: .venv/installed
	@echo "== suite on SQLite, filesystem broker =="
	env -u DATABASE_URL -u CELERY_BROKER_URL -u CACHE_URL $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: .venv/installed
	@echo "== suite on PostgreSQL, Redis broker =="
	bash scripts/with-services.sh $(PY) -m pytest $(PYTEST_ARGS)

lint: .venv/installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy thinkpool contributors scoring
	# The import directions: thinkpool -> contributors -> scoring; the worker imports no Django.
	.venv/bin/lint-imports

format: .venv/installed
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

migrations-check: .venv/installed
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf var/
