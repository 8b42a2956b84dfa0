"""Many API processes, few connections: the API's core (submit, read, wait,
cancel) through a real PgBouncer in transaction mode (tools/pgbouncer.py,
Debian's `pgbouncer`), with 4 API processes (gunicorn workers) in front of
it and the LISTEN connection direct (LISTEN_DATABASE_URL)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.conftest import as_role
from tests.http_client import post_json, request
from tests.support import ApiServer, wait_for
from tools import pgbouncer

POOL_SIZE = 3
LOGIN = "calculator_api_login"


@pytest.fixture
def bouncer(database_url, db):
    db.execute(f"""DO $$ BEGIN
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LOGIN}') THEN
                         CREATE ROLE {LOGIN} LOGIN IN ROLE calculator_api;
                     END IF;
                   END $$""")
    for statement in pgbouncer.API_ROLE_SETTINGS:
        db.execute(statement.format(role=LOGIN))
    with pgbouncer.PgBouncer(database_url, user=LOGIN, pool_size=POOL_SIZE) as running:
        yield running


@pytest.fixture
def api(bouncer, database_url, tmp_path):
    server = ApiServer(bouncer.url, tmp_path / "api.log", web_concurrency=4,
                       listen_database_url=as_role(database_url, "calculator_api"),
                       database_pooler="transaction",
                       pool_max_size=8, log_level="WARNING")
    yield server
    server.stop()


def server_connections(db) -> int:
    return db.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (LOGIN,)).fetchone()[0]


def test_submit_read_wait_and_cancel_through_pgbouncer_with_4_api_processes(api, db, calculators, worker_url):
    base = api.base
    # Concurrent submissions, singles and bulks (group commit through the pooler).
    def submit(k):
        if k % 3 == 0:
            status, _, body = post_json(base, "/api/expressions",
                                        {"items": [{"expression": f"{k}+{j}"} for j in range(3)]})
            assert status == 202, body
            return [(i, f"{k}+{j}") for j, i in enumerate(body["expression_ids"])]
        status, _, body = post_json(base, "/api/expression", {"expression": f"{k}*2"})
        assert status == 202, body
        return [(body["expression_id"], f"{k}*2")]

    with ThreadPoolExecutor(16) as pool:
        submitted = [pair for pairs in pool.map(submit, range(120)) for pair in pairs]
    ids = [i for i, _ in submitted]
    assert len(set(ids)) == len(ids) == 40 * 3 + 80
    stored = dict(db.execute("SELECT id, expression FROM tasks").fetchall())
    assert stored == dict(submitted)
    assert server_connections(db) <= POOL_SIZE, "4 processes, at most the pooler's connections"

    # Read: pending, one and many.
    first = ids[0]
    assert request(base, "GET", f"/api/result/{first}")[:3:2] == (202, {"expression_id": first, "status": "pending"})
    status, _, body = request(base, "GET", f"/api/results?ids={first},{ids[1]},999999")
    assert status == 200 and [r["status"] for r in body["results"]] == ["pending", "pending", "unknown"]

    # Cancel one before any Calculator runs; an unknown id is 404.
    status, _, body = request(base, "POST", f"/api/result/{ids[1]}/cancel")
    assert (status, body) == (200, {"expression_id": ids[1], "status": "cancelled"})
    assert request(base, "POST", "/api/result/999999/cancel")[0] == 404

    # Wait: a fresh submission, answered by a Calculator through ?wait=
    # (the LISTEN connection is direct; the pooler cannot carry LISTEN).
    status, _, body = post_json(base, "/api/expression", {"expression": "x*t", "variables": {"x": 6, "t": 7}})
    assert status == 202
    waited = body["expression_id"]
    calculators(worker_url)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: request(base, "GET", f"/api/result/{waited}?wait=20"), range(8)))
    assert {(status, json.dumps(body)) for status, _, body in answers} == {
        (200, json.dumps({"expression_id": waited, "status": "done", "result": 42}))}
    wait_for(lambda: db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0] == 0,
             timeout=60, message="the Calculator to drain the queue")
    status, _, body = request(base, "GET", f"/api/result/{first}")
    assert status == 200 and body["status"] == "done"
    assert request(base, "GET", f"/api/result/{ids[1]}")[2] == {"expression_id": ids[1], "status": "cancelled"}
    assert server_connections(db) <= POOL_SIZE
    assert "Traceback" not in api.log(), api.log()


def test_the_pool_sessions_have_the_apis_settings(bouncer):
    """Whatever server connection a transaction lands on has the API's
    statement_timeout and sends no NOTIFY from the trigger (the API sends it
    after the commit)."""
    with psycopg.connect(bouncer.url, autocommit=True, prepare_threshold=None) as conn:
        for _ in range(POOL_SIZE * 2):
            assert conn.execute("SELECT current_setting('statement_timeout'), "
                                "current_setting('calculator.notify_after_commit', true)").fetchone() == ("5s", "on")


def test_through_pgbouncer_every_submissions_notification_says_where_its_task_stands(api, db, database_url):
    """The NOTIFY reads the place of the session's first new task from the
    session (sql/011); behind a pooler it must travel in the insert's own
    transaction, or another server connection's session answers ('')."""
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_inserted")

        def submit(k):
            if k % 4 == 0:
                status, _, body = request(api.base, "POST", "/api/expression", f'{{"expression": "{k}"}}',
                                          {"Content-Type": "application/json", "Idempotency-Key": f"k{k}"})
            else:
                status, _, body = post_json(api.base, "/api/expression", {"expression": f"{k}"})
            assert status == 202, body

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, range(80)))
        payloads = [n.payload for n in listener.notifies(timeout=0.5)]
    assert payloads and all(payloads), payloads
