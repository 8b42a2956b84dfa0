"""PostgreSQL going away and coming back, for real: a cluster of these tests'
own is stopped and started under a running API and Calculator."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import psycopg
import pytest
from werkzeug.serving import make_server

from core.migrations import apply_migrations
from tests.support import CalculatorProcess, Calculators, insert, wait_done, wait_for
from tests.http_client import request
from tools.pgcluster import LocalPostgres
from worker.registry import HEARTBEAT_SECONDS

SLOW = "fac(300000) / fac(299999)"


@pytest.fixture(scope="module")
def cluster():
    with LocalPostgres() as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            apply_migrations(conn)
        yield pg


@pytest.fixture
def conn(cluster):
    """A superuser connection that reconnects after outages."""
    class Reconnecting:
        def __init__(self):
            self._conn = None

        def execute(self, *args):
            for _ in range(50):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(cluster.url, autocommit=True)
                    return self._conn.execute(*args)
                except psycopg.OperationalError:
                    self._conn = None
                    time.sleep(0.1)
            raise AssertionError("database did not come back")

        def close(self):
            if self._conn is not None:
                self._conn.close()

    reconnecting = Reconnecting()
    reconnecting.execute("TRUNCATE tasks RESTART IDENTITY")
    yield reconnecting
    reconnecting.close()


@pytest.fixture
def calculator(cluster, conn, tmp_path):
    started = Calculators(cluster.url, tmp_path)
    yield started
    started.close()


def _evaluators_idle(calc: CalculatorProcess) -> bool:
    states = []
    for pid in calc.evaluator_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        states.append("State:\tS" in status)
    return bool(states) and all(states)


def test_the_api_answers_503_at_once_while_the_database_is_down_and_recovers(cluster, conn, caplog):
    from api import create_app
    from core.settings import ApiSettings
    # A long DB_TIMEOUT (20 s), so that "at once" is told from "after waiting
    # for a connection" by a wide margin rather than a sub-second bound; a
    # pool of one connection, which cannot grow around its own reconnection
    # backoff (as a busy pool whose every connection broke cannot either).
    caplog.set_level(logging.INFO, logger="api")
    settings = ApiSettings(pool_min_size=1, pool_max_size=1, db_timeout=20)
    app = create_app({"DATABASE_URL": cluster.url, "SETTINGS": settings})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    task_id = insert(conn, "1")
    calls = [("GET", f"/api/result/{task_id}", None), ("GET", "/readyz", None),
             ("POST", "/api/expression", '{"expression": "2+2"}'),
             ("GET", f"/api/result/{task_id}?wait=5", None)]
    try:
        assert request(base, "GET", f"/api/result/{task_id}")[0] == 202
        cluster.stop_server()
        # Down for 4.5 s: long enough for a pool's own reconnection backoff to
        # grow past a second.
        down = time.monotonic()
        while time.monotonic() - down < 4.5:
            for method, path, body in calls:
                started = time.monotonic()
                status, headers, answer = request(base, method, path, body,
                                                  {"Content-Type": "application/json"})
                took = time.monotonic() - started
                assert (status, answer) == (503, {"msg": "database unavailable"}), (path, answer)
                assert headers["Retry-After"] == "1"
                assert took < settings.db_timeout / 4, \
                    f"{method} {path} took {took:.2f} s with the database down: it waited for a connection"
        cluster.start_server()
        wait_for(lambda: request(base, "POST", "/api/expression", '{"expression": "2+2"}',
                                 {"Content-Type": "application/json"})[0] == 202,
                 timeout=20, interval=0.02, message="the API to serve again without a restart")
        # Resumed by a probe's fresh connection and a new pool (api/db.py), not
        # by the old pool's reconnection backoff (seconds, after 4.5 s down).
        assert [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()], \
            "the API resumed without its probe"
        assert request(base, "GET", "/readyz")[0] == 200
    finally:
        server.shutdown()
        thread.join()
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()
        if not (Path(cluster.data_dir) / "postmaster.pid").exists():
            cluster.start_server()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_calculator_catches_up_at_once_when_the_database_returns(cluster, conn, calculator):
    calc = calculator(queue_wait_time=60)
    wait_done(conn, [insert(conn, "1")])
    cluster.stop_server()
    wait_for(lambda: "database connection lost" in calc.log(), message="the Calculator to notice")
    # Waiting for the database costs nothing: no loop spinning on a heartbeat
    # that falls due but cannot be sent (a heartbeat period and a bit of
    # waiting, well under 0.5 s of CPU).
    before = cpu_seconds(calc.pid)
    time.sleep(HEARTBEAT_SECONDS + 1)
    assert cpu_seconds(calc.pid) - before < 0.5, "the Calculator spins while the database is down"
    cluster.start_server()
    back = time.monotonic()
    # Inserted before the Calculator has LISTENed again: no notification
    # reaches it, only the poll it makes on reconnecting.
    ids = [insert(conn, f"{i}*2") for i in range(20)]
    results = wait_done(conn, ids, timeout=30)
    assert time.monotonic() - back < 10, "caught up by the 60 s poll, not on reconnecting"
    assert all(results[i] == ("done", (i - 2) * 2, None) for i in ids)
    assert "database connection restored" in calc.log()
    assert calc.process.poll() is None


def test_a_result_computed_during_an_outage_is_stored_afterwards(cluster, conn, calculator):
    calc = calculator(num_processes=1)
    task_id = insert(conn, SLOW)
    wait_for(lambda: "claimed ids=" in calc.log())
    cluster.stop_server()
    try:
        wait_for(lambda: _evaluators_idle(calc), timeout=60, message="the calculation to finish")
    finally:
        cluster.start_server()
    assert wait_done(conn, [task_id], timeout=30)[task_id] == ("done", 300000.0, None)
    attempts = conn.execute("SELECT attempts FROM tasks WHERE id = %s", (task_id,)).fetchone()[0]
    assert attempts == 1, "stored from memory after reconnecting, not computed again"
    log = calc.log()
    assert log.count("database connection lost") == 1, "the outage is logged once"


def test_the_database_going_down_mid_group_answers_503_to_every_member(cluster, conn):
    """A group of submissions queued behind one whose INSERT is waiting
    (tasks locked); PostgreSQL stops: every one of them is a 503."""
    from concurrent.futures import ThreadPoolExecutor

    from api import create_app
    from core.settings import ApiSettings
    app = create_app({"DATABASE_URL": cluster.url, "SETTINGS": ApiSettings()})
    group = app.extensions["group_commit"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    bodies = ['{"expression": "1"}'] + [f'{{"expression": "2+{k}"}}' for k in range(8)]
    blocker = psycopg.connect(cluster.url)
    try:
        blocker.execute("LOCK TABLE tasks IN SHARE MODE")
        with ThreadPoolExecutor(len(bodies)) as pool:
            calls = [pool.submit(request, base, "POST", "/api/expression", bodies[0],
                                 {"Content-Type": "application/json"})]
            wait_for(lambda: group._busy, message="the first submission to be in flight")
            calls += [pool.submit(request, base, "POST", "/api/expression", body,
                                  {"Content-Type": "application/json"}) for body in bodies[1:]]
            wait_for(lambda: len(group._queue) == len(bodies) - 1, message="the group to queue")
            cluster.stop_server()
            answers = [call.result() for call in calls]
        assert [(status, answer) for status, _, answer in answers] == \
            [(503, {"msg": "database unavailable"})] * len(bodies)
        assert not group._busy and not group._queue
    finally:
        server.shutdown()
        thread.join()
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()
        blocker.close()
        if not (Path(cluster.data_dir) / "postmaster.pid").exists():
            cluster.start_server()
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
