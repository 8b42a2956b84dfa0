"""The dashboard's database cost: N open tabs of the page, for a while, with
a history of tasks in the table; pg_stat_statements counts what they cost.

    .venv/bin/python -m bench.dashboard_tabs [--tabs 10] [--seconds 30] [--history 1000000]

Runs: 1 tab, then N tabs with the fragment cache (DASHBOARD_CACHE_SECONDS=1,
the default), then N tabs without it (0). The API is gunicorn with 2
workers. Each tab is a window of its own in one headless Chromium, so each
is visible and polls (a hidden tab does not).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import psycopg

from core.migrations import apply_migrations
from tests.browser import Chromium
from tests.http_client import answers
from tests.support import ROOT, wait_for
from tools.pgcluster import LocalPostgres, free_port


def fill(conn, history: int) -> None:
    conn.execute("""
        INSERT INTO tasks (expression, variables, status, result, finished_at, attempts)
        SELECT 'x^2', jsonb_build_object('x', g), 'done', to_jsonb(g::bigint * g),
               now() - interval '1 hour' + g * interval '1 millisecond', 1
        FROM generate_series(1, %s) g""", (history,))
    conn.execute("""
        INSERT INTO tasks (expression, status, error, finished_at, attempts)
        SELECT '1/0', 'error', 'division by zero', now() - interval '30 minutes', 1
        FROM generate_series(1, %s) g""", (max(1, history // 1000),))
    conn.execute("INSERT INTO tasks (expression) SELECT '2+2' FROM generate_series(1, 20)")
    conn.execute("VACUUM ANALYZE tasks")


def measure(url: str, tabs: int, seconds: float, cache: str) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(DATABASE_URL=url, BIND=f"127.0.0.1:{port}", PYTHONPATH=str(ROOT), WEB_CONCURRENCY="2",
               DASHBOARD_CACHE_SECONDS=cache, LOG_LEVEL="WARNING")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    browser = None
    try:
        wait_for(lambda: answers(base, "/readyz"), timeout=30, interval=0.1, message="the API")
        browser = Chromium()
        driver = browser.driver
        for index in range(tabs):
            if index:
                driver.switch_to.new_window("window")
            driver.get(base + "/")
        visible = sum(1 for handle in driver.window_handles
                      if driver.switch_to.window(handle) is None
                      and driver.execute_script("return document.visibilityState") == "visible")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
            time.sleep(seconds)
            rows = conn.execute("""
                SELECT calls, total_exec_time, query FROM pg_stat_statements
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND query NOT LIKE '%%pg_stat_statements%%'
                ORDER BY total_exec_time DESC""").fetchall()
    finally:
        if browser:
            browser.quit()
        server.terminate()
        server.wait(30)
    calls = sum(r[0] for r in rows)
    ms = sum(r[1] for r in rows)
    top = [(r[0], round(r[1], 1), " ".join(r[2].split())[:70]) for r in rows[:4]]
    return {"tabs": tabs, "visible": visible, "cache_seconds": cache, "statements_per_second": calls / seconds,
            "database_ms_per_second": ms / seconds, "top": top}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tabs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--history", type=int, default=1_000_000)
    args = parser.parse_args()
    cluster = LocalPostgres(settings={"shared_preload_libraries": "pg_stat_statements",
                                      "shared_buffers": "256MB"}).start()
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            apply_migrations(conn)
            conn.execute("CREATE EXTENSION pg_stat_statements")
            fill(conn, args.history)
        print(f"history: {args.history} finished tasks, {args.seconds:g} s per run")
        for tabs, cache in ((1, "1"), (args.tabs, "1"), (args.tabs, "0")):
            result = measure(cluster.url, tabs, args.seconds, cache)
            print(f"{result['tabs']:>3} tabs ({result['visible']} visible), cache {cache} s: "
                  f"{result['statements_per_second']:.1f} statements/s, "
                  f"{result['database_ms_per_second']:.1f} ms of database time per second")
            for calls, ms, query in result["top"]:
                print(f"      {calls:>5} calls {ms:>9} ms  {query}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
