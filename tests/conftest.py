"""Fixtures: a real PostgreSQL (started here unless TEST_DATABASE_URL is set),
a migrated test database emptied before each test, the Flask app, real
Calculator processes and a real HTTP server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from werkzeug.serving import make_server

from core.migrations import apply_migrations
from tools.pgcluster import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition"):
    """Poll until predicate() is truthy; return its value or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


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
        conn.execute("TRUNCATE tasks RESTART IDENTITY")
        conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
        yield conn


def outcome(conn: psycopg.Connection, task_id: int):
    return conn.execute("SELECT status, result, error FROM tasks WHERE id = %s", (task_id,)).fetchone()


def wait_done(conn: psycopg.Connection, task_ids, timeout: float = 20.0):
    """Wait until none of task_ids is pending; return {id: (status, result, error)}."""
    ids = list(task_ids)
    wait_for(lambda: conn.execute(
        "SELECT count(*) = 0 FROM tasks WHERE id = ANY(%s) AND status = 'pending'", (ids,)
    ).fetchone()[0], timeout, message=f"tasks {ids[:10]} to finish")
    rows = conn.execute("SELECT id, status, result, error FROM tasks WHERE id = ANY(%s)", (ids,))
    return {r[0]: r[1:] for r in rows}


def insert(conn: psycopg.Connection, expression: str, variables: str = "{}") -> int:
    return conn.execute("INSERT INTO tasks (expression, variables) VALUES (%s, %s) RETURNING id",
                        (expression, variables)).fetchone()[0]


class CalculatorProcess:
    """A real `python -m worker` process with its own settings."""

    def __init__(self, database_url: str, log_path: Path, **settings):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(DATABASE_URL=database_url, PYTHONPATH=str(ROOT), LOG_LEVEL="INFO",
                   **{k.upper(): str(v) for k, v in settings.items()})
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 20.0) -> None:
        wait_for(lambda: "calculator started" in self.log() or self.process.poll() is not None,
                 timeout, message="the calculator to start")
        assert self.process.poll() is None, self.log()

    def evaluator_pids(self) -> list[int]:
        """The evaluation processes: the children that are forks of the worker."""
        pids = []
        for pid in map(int, Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == \
                        Path(f"/proc/{self.pid}/cmdline").read_bytes():
                    pids.append(pid)
            except FileNotFoundError:
                continue
        return pids

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def calculators(worker_url, tmp_path, db):
    """start(**settings) runs a Calculator against the test database, with
    the least-privileged calculator_worker role."""
    started: list[CalculatorProcess] = []

    def start(url: str | None = None, wait: bool = True, **settings) -> CalculatorProcess:
        calc = CalculatorProcess(url or worker_url, tmp_path / f"calculator-{len(started)}.log",
                                 **settings)
        started.append(calc)
        if wait:
            calc.wait_started()
        return calc

    yield start
    for calc in started:
        if calc.process.poll() is None:
            calc.kill()
        calc._log.close()


@pytest.fixture
def app(api_url, db):
    """The API, connected with the least-privileged calculator_api role."""
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True})
    yield app
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
