"""Throughput: 20,000 tasks inserted by one statement, drained by our
Calculators, and by the raw SQL loop that is the limit to compare with."""

from __future__ import annotations

import json
import time

import psycopg
from py_expression_eval import Parser

from bench.common import JOB, reset, start_calculator, wait_drained

INSERT_SAME = """
    INSERT INTO tasks (expression, variables)
    SELECT %s, jsonb_build_object('x', 10 + g %% 7, 't', 11, 'y', 1)
    FROM generate_series(1, %s) g
"""
# Distinct texts: no parse cache can help.
INSERT_DISTINCT = """
    INSERT INTO tasks (expression, variables)
    SELECT %s || ' + ' || g, jsonb_build_object('x', 10 + g %% 7, 't', 11, 'y', 1)
    FROM generate_series(1, %s) g
"""


def drain_rate(conn: psycopg.Connection, count: int) -> float:
    first, last = conn.execute("SELECT min(created_at), max(finished_at) FROM tasks").fetchone()
    return count / (last - first).total_seconds()


def calculators_throughput(url: str, conn: psycopg.Connection, count: int, calculators: int,
                           distinct: bool, **settings) -> float:
    reset(conn)
    running = [start_calculator(url, num_processes=2, **settings) for _ in range(calculators)]
    try:
        conn.execute(INSERT_DISTINCT if distinct else INSERT_SAME, (JOB, count))
        wait_drained(conn)
    finally:
        for calc in running:
            calc.stop()
    bad = conn.execute("SELECT count(*) FROM tasks WHERE status <> 'done'").fetchone()[0]
    assert bad == 0, f"{bad} tasks did not finish as done"
    return drain_rate(conn, count)


# --- the raw loop: the least a Python process can do for this work ---------

RAW_CLAIM = """
    WITH c AS (
        SELECT id FROM tasks WHERE status = 'pending' AND process_at <= now()
        ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks t SET process_at = now() + interval '30 seconds'
    FROM c WHERE t.id = c.id
    RETURNING t.id, t.expression, t.variables
"""
RAW_STORE = """
    UPDATE tasks t SET status = 'done', result = r.result::jsonb, finished_at = clock_timestamp()
    FROM unnest(%s::bigint[], %s::text[]) AS r(id, result)
    WHERE t.id = r.id
"""


def raw_loop_throughput(conn: psycopg.Connection, count: int, evaluate: bool) -> float:
    reset(conn)
    conn.execute(INSERT_SAME, (JOB, count))
    started = time.perf_counter()
    with psycopg.connect(conn.info.dsn, autocommit=True) as worker:
        while True:
            rows = worker.execute(RAW_CLAIM, prepare=True).fetchall()
            if not rows:
                break
            if evaluate:
                results = [json.dumps(Parser().parse(e).evaluate(v)) for _, e, v in rows]
            else:
                results = ["0"] * len(rows)
            worker.execute(RAW_STORE, ([r[0] for r in rows], results), prepare=True)
    return count / (time.perf_counter() - started)
