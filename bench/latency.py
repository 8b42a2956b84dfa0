"""Latency insert -> result, one task at a time at a steady rate.

Measured from database timestamps: created_at (clock_timestamp() when the row
is inserted) to finished_at (clock_timestamp() in the statement that stores
the outcome). Both are taken inside their transactions, so the figure
includes the insert's commit but not the store's commit, which takes about
as long: it is insert-committed to result-committed within a commit's time.
"""

from __future__ import annotations

import json
import select
import threading
import time
from http.client import HTTPConnection
from urllib.parse import urlsplit

import psycopg

from bench.common import JOB, JOB_VARIABLES, percentiles, reset, start_calculator, wait_drained


def paced(rate: float, seconds: float):
    """Yield at rate per second for seconds, without drifting."""
    interval = 1.0 / rate
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = started + n * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield n


def insert_paced(url: str, rate: float, seconds: float) -> None:
    """One task at a time, rate per second, each insert its own transaction."""
    with psycopg.connect(url, autocommit=True) as inserter:
        for _ in paced(rate, seconds):
            inserter.execute("INSERT INTO tasks (expression, variables) VALUES (%s, %s)",
                             (JOB, json.dumps(JOB_VARIABLES)), prepare=True)


def database_latencies_ms(conn: psycopg.Connection) -> list[float]:
    rows = conn.execute("SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM tasks "
                        "WHERE status = 'done' ORDER BY id").fetchall()
    return [float(r[0]) for r in rows]


def sql_latency(url: str, conn: psycopg.Connection, rate: float, seconds: float,
                notify: bool = True, **settings) -> dict:
    reset(conn)
    if not notify:
        conn.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
        settings.setdefault("queue_wait_time", 1)
    calc = start_calculator(url, **settings)
    try:
        insert_paced(url, rate, seconds)
        wait_drained(conn)
    finally:
        calc.stop()
        conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    return percentiles(database_latencies_ms(conn))


def http_latency(url: str, conn: psycopg.Connection, api_base: str, rate: float, seconds: float,
                 **settings) -> dict:
    """Submit over HTTP, then GET ?wait= until the result: the client's view,
    with one keep-alive connection as a real client would hold."""
    reset(conn)
    calc = start_calculator(url, **settings)
    client_ms = []
    parts = urlsplit(api_base)
    http = HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        body = json.dumps({"expression": JOB, "variables": JOB_VARIABLES})
        for _ in paced(rate, seconds):
            started = time.perf_counter()
            http.request("POST", "/api/expression", body, {"Content-Type": "application/json"})
            response = http.getresponse()
            answer = json.loads(response.read())
            assert response.status == 202, answer
            http.request("GET", f"/api/result/{answer['expression_id']}?wait=5")
            response = http.getresponse()
            outcome = json.loads(response.read())
            assert response.status == 200 and outcome["status"] == "done", outcome
            client_ms.append((time.perf_counter() - started) * 1000)
        wait_drained(conn)
    finally:
        http.close()
        calc.stop()
    return {"client": percentiles(client_ms), "database": percentiles(database_latencies_ms(conn))}


def sql_client_latency(url: str, conn: psycopg.Connection, rate: float, seconds: float,
                       **settings) -> dict:
    """http_latency's counterpart from a SQL client (what a psql session
    would do at best): on one connection that LISTENs on results_stored,
    INSERT ... RETURNING id, wait for the notification naming the id, then
    SELECT the outcome; timed by the client like http_latency."""
    reset(conn)
    calc = start_calculator(url, **settings)
    client_ms = []
    try:
        with psycopg.connect(url, autocommit=True) as client:
            client.execute("LISTEN results_stored")
            for _ in paced(rate, seconds):
                started = time.perf_counter()
                task_id = client.execute("INSERT INTO tasks (expression, variables) VALUES (%s, %s) RETURNING id",
                                         (JOB, json.dumps(JOB_VARIABLES)), prepare=True).fetchone()[0]
                for notify in client.notifies(timeout=5):
                    if notify.payload == "*" or str(task_id) in notify.payload.split(","):
                        break
                status, = client.execute("SELECT status FROM tasks WHERE id = %s", (task_id,),
                                         prepare=True).fetchone()
                assert status == "done", status
                client_ms.append((time.perf_counter() - started) * 1000)
        wait_drained(conn)
    finally:
        calc.stop()
    return {"client": percentiles(client_ms), "database": percentiles(database_latencies_ms(conn))}


# --- the floor: the least a Python process can do for this work ------------

def raw_loop_latency(url: str, conn: psycopg.Connection, rate: float, seconds: float) -> dict:
    """LISTEN, claim, evaluate in-process (no child processes, so no timeout
    protection), store: what our Calculator's latency is to be compared with.
    Its session has synchronous_commit off, like the Calculator's default."""
    from py_expression_eval import Parser

    from bench.throughput import RAW_CLAIM, RAW_STORE
    reset(conn)
    stop = threading.Event()
    listening = threading.Event()

    def loop():
        with psycopg.connect(url, autocommit=True) as listen, psycopg.connect(url, autocommit=True) as work:
            work.execute("SET synchronous_commit = off")
            listen.execute("LISTEN tasks_inserted")
            listening.set()
            while not stop.is_set():
                if not select.select([listen], [], [], 0.1)[0]:
                    continue
                list(listen.notifies(timeout=0))
                rows = work.execute(RAW_CLAIM, prepare=True).fetchall()
                if rows:
                    results = [json.dumps(Parser().parse(e).evaluate(v)) for _, e, v in rows]
                    work.execute(RAW_STORE, ([r[0] for r in rows], results), prepare=True)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    listening.wait(10)
    try:
        insert_paced(url, rate, seconds)
        wait_drained(conn)
    finally:
        stop.set()
        worker.join(10)
    return percentiles(database_latencies_ms(conn))
