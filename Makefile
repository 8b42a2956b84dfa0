# calculator-service: `make run` to start it locally, `make test` to test it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt | cksum | cut -d' ' -f1)

.PHONY: help venv test run migrate bench bench-growth bench-steady bench-peers chaos compose-smoke clean

help:
	@echo "make run      start PostgreSQL (throwaway), migrations, API on :\$${PORT:-5000}, Calculators"
	@echo "make test     run the test suite against a real PostgreSQL"
	@echo "make migrate  apply migrations to DATABASE_URL"
	@echo "make chaos    the long chaos run (5,000 expressions under faults)"
	@echo "make bench    run the benchmarks (see BENCHMARKS.md); make bench-peers for PgQueuer/procrastinate"
	@echo "make bench-growth / bench-steady  costs with 0/1M/5M finished rows; table size under load with a short retention"
	@echo "make compose-smoke  the docker-compose stack end to end (needs Docker)"

$(STAMP): requirements.txt requirements-test.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

run: venv
	$(PY) -m tools.run_local

migrate: venv
	$(PY) -m core.migrations

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

compose-smoke:
	python3 tests/compose/smoke.py

chaos: venv
	$(PY) -m tests.chaos --expressions 5000 --fault-seconds 60

bench: venv
	$(PY) -m bench.run

bench-growth: venv
	$(PY) -m bench.growth

bench-steady: venv
	$(PY) -m bench.steady

PEERS_VENV := bench/.venv-peers
bench-peers:
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements-peers.txt
	$(PEERS_VENV)/bin/python -m bench.peers
