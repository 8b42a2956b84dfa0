"""Fixtures: a real PostgreSQL (started here unless TEST_DATABASE_URL is set:
the system's binaries, else the embedded ones in .venv; PG=embedded or
PG=system picks one, see tools/pgbinaries.py),
a migrated test database emptied before each test, the Flask app, real
Calculator processes and a real HTTP server."""

from __future__ import annotations

import os
import threading
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from werkzeug.serving import make_server

from core.migrations import apply_migrations
from tests.support import Calculators
from tools.pgcluster import LocalPostgres, PostgresError, choose_server


def pytest_ignore_collect(collection_path, config):
    """The browser tests need Chromium: without it they are not collected,
    and the header says so in one line (.ci/run installs it, so CI runs them)."""
    from tests.browser import find_chromium
    if collection_path.name == "test_browser.py" and find_chromium() is None:
        return True
    return None


CHROMIUM_INSTALL = "apt-get install chromium chromium-driver, or set CHROMIUM and CHROMEDRIVER"


def running_in_ci(environ=os.environ) -> bool:
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_sessionstart(session):
    """Without a server to test against, say what to install in one line.
    In CI (CI=true) a missing Chromium fails the run: the browser tests must
    not be dropped unnoticed by a CI that skipped .ci/run's install step."""
    from tests.browser import find_chromium
    if running_in_ci() and find_chromium() is None:
        pytest.exit(f"CI=true but no Chromium for the browser tests: {CHROMIUM_INSTALL} "
                    "(.ci/run installs it)", returncode=2)
    if not os.environ.get("TEST_DATABASE_URL"):
        try:
            choose_server()
        except PostgresError as error:
            pytest.exit(f"make test: {error} (or set TEST_DATABASE_URL)", returncode=2)


def pytest_report_header(config):
    """Which PostgreSQL the tests run on, and whether the browser tests run."""
    from tests.browser import find_chromium
    lines = []
    if os.environ.get("TEST_DATABASE_URL"):
        lines.append("server: the PostgreSQL at TEST_DATABASE_URL")
    else:
        try:
            lines.append(f"server: {choose_server().describe()}")
        except PostgresError:
            pass
    if find_chromium() is None:
        lines.append(f"browser tests: NOT RUN, no Chromium found ({CHROMIUM_INSTALL})")
    else:
        lines.append("browser tests: with {} and {}".format(*find_chromium()))
    return lines


@pytest.fixture(scope="session")
def server_url():
    """URL of a PostgreSQL server we may create databases on."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    with LocalPostgres() as cluster:
        yield cluster.url


def create_database(server: str, prefix: str = "calculator_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_conninfo(server, dbname=name)


@pytest.fixture(scope="session")
def database_url(server_url):
    url = create_database(server_url)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_migrations(conn)
    return url


def as_role(url: str, role: str) -> str:
    """The same database, but every statement runs with role's privileges."""
    return make_conninfo(url, options=f"-c role={role}")


@pytest.fixture(scope="session")
def api_url(database_url):
    return as_role(database_url, "calculator_api")


@pytest.fixture(scope="session")
def worker_url(database_url):
    return as_role(database_url, "calculator_worker")


@pytest.fixture
def db(database_url):
    """An autocommit connection to the test database, emptied first."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, idempotency_keys, api_keys, submission_buckets RESTART IDENTITY")
        conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
        yield conn


@pytest.fixture
def calculators(worker_url, tmp_path, db):
    """start(**settings) runs a Calculator against the test database, with
    the least-privileged calculator_worker role."""
    started = Calculators(worker_url, tmp_path)
    yield started
    started.close()


@pytest.fixture
def calculator_rows(worker_url, db):
    """A connection as the Calculators' role, to write their rows as they do
    (tests.support.write_tenant_usage); no rows before, none after."""
    db.execute("DELETE FROM calculators")
    with psycopg.connect(worker_url, autocommit=True) as conn:
        yield conn
        conn.execute("DELETE FROM calculators")


@pytest.fixture
def app(api_url, db):
    """The API, connected with the least-privileged calculator_api role."""
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True})
    yield app
    app.extensions["result_waiter"].close()
    app.extensions["pool"].close()


@pytest.fixture
def make_app(api_url, db):
    """make_app(SETTING=value, ...): the API with those settings (as if read
    from the environment), closed after the test."""
    from api import create_app
    from core.settings import ApiSettings
    apps = []

    def make(**environ):
        settings = ApiSettings.from_env({k: str(v) for k, v in environ.items()})
        app = create_app({"DATABASE_URL": api_url, "TESTING": True, "SETTINGS": settings})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def http_server(app):
    """The app behind a real HTTP server on 127.0.0.1; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
