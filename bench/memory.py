"""Memory: resident set size of a Calculator (parent and evaluation
processes) and of the API processes, before and after 100,000 tasks."""

from __future__ import annotations


import psycopg

from bench.common import JOB, JOB_VARIABLES, reset, rss_kb, start_calculator, wait_drained
from bench.http_load import gunicorn
from bench.throughput import INSERT_DISTINCT
from tests.http_client import post_json, request

CHUNK = 10_000


def _tree_rss(pid: int) -> int:
    from pathlib import Path
    total = rss_kb(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += _tree_rss(int(child))
    return total


def calculator_memory(url: str, conn: psycopg.Connection, tasks: int) -> dict:
    """Distinct expressions, so that the parse caches fill up too."""
    reset(conn)
    calc = start_calculator(url, num_processes=2)
    try:
        conn.execute(INSERT_DISTINCT, (JOB, 5_000))  # warm up: caches full, pools sized
        wait_drained(conn)
        before = _tree_rss(calc.pid)
        for _ in range(tasks // CHUNK):
            conn.execute(INSERT_DISTINCT, (JOB, CHUNK))
            wait_drained(conn)
        after = _tree_rss(calc.pid)
    finally:
        calc.stop()
    return {"before_kb": before, "after_kb": after, "change": (after - before) / before}


def api_memory(url: str, conn: psycopg.Connection, tasks: int) -> dict:
    """100 bulk submits of 1,000 items and 1,000-id bulk reads, through gunicorn."""
    reset(conn)
    items = [{"expression": JOB + f" + {i}", "variables": JOB_VARIABLES} for i in range(1000)]
    with gunicorn(url, WEB_CONCURRENCY="1") as (base, process):
        for _ in range(5):  # warm up
            post_json(base, "/api/expressions", {"items": items})
        before = _tree_rss(process.pid)
        for _ in range(tasks // 1000):
            status, _, body = post_json(base, "/api/expressions", {"items": items})
            assert status == 202, body
            ids = body["expression_ids"]
            for start in range(0, len(ids), 500):  # a request line has room for ~500 ids
                query = ",".join(map(str, ids[start:start + 500]))
                assert request(base, "GET", f"/api/results?ids={query}")[0] == 200
        after = _tree_rss(process.pid)
    return {"before_kb": before, "after_kb": after, "change": (after - before) / before}
