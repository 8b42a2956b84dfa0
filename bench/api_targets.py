"""The API's targets alone (the API part of make bench, quicker):

    python -m bench.api_targets          # BENCH_RUNS (3) rounds of BENCH_LOAD_SECONDS (5)

Each round, on one durable database: wrk with 4 connections on POST
/api/expression, GET /api/result/<id> and a trivial Flask endpoint, then
pgbench's single-row INSERT with 4 clients (the ratios compare figures
measured together), then submit -> result over HTTP with ?wait= at 50/s
(client view, one keep-alive connection) with one Calculator, under the
gevent worker and, for comparison, the thread worker.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import psycopg

from bench import http_load, latency
from bench.common import database
from tests.support import ROOT

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "5"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "5"))


def main() -> int:
    rounds = []
    with database() as (url, cluster):
        with psycopg.connect(url, autocommit=True) as conn:
            for run in range(RUNS):
                figures = http_load.api_load(url, 4, SECONDS, cluster)
                with http_load.gunicorn(url) as (base, _):
                    figures["submit_then_wait"] = latency.http_latency(url, conn, base, 50, LATENCY_SECONDS)
                # The same under the thread worker, for comparison in the same run.
                with http_load.gunicorn(url, API_WORKER_CLASS="gthread") as (base, _):
                    figures["submit_then_wait_gthread"] = latency.http_latency(url, conn, base, 50, LATENCY_SECONDS)
                rounds.append(figures)
                tps = figures["pgbench_insert_tps"]
                print(f"run {run + 1}: POST {figures['post_expression']['requests_per_second']:,.0f} "
                      f"({figures['post_expression']['requests_per_second'] / tps:.2f}x), "
                      f"GET {figures['get_result']['requests_per_second']:,.0f} "
                      f"({figures['get_result']['requests_per_second'] / tps:.2f}x), "
                      f"trivial {figures['trivial_flask']['requests_per_second']:,.0f}, pgbench {tps:,.0f} TPS, "
                      f"submit->result p50 {figures['submit_then_wait']['client']['p50']:.2f} ms "
                      f"p99 {figures['submit_then_wait']['client']['p99']:.2f} ms "
                      f"(database part p50 {figures['submit_then_wait']['database']['p50']:.2f} ms; "
                      f"gthread p50 {figures['submit_then_wait_gthread']['client']['p50']:.2f} ms)", flush=True)
    med = lambda f: statistics.median(f(r) for r in rounds)  # noqa: E731
    print(f"\nmedian of {RUNS}: POST {med(lambda r: r['post_expression']['requests_per_second'] / r['pgbench_insert_tps']):.2f}x "
          f"pgbench (target 0.5), GET {med(lambda r: r['get_result']['requests_per_second'] / r['pgbench_insert_tps']):.2f}x "
          f"(target 1.0), submit->result p50 {med(lambda r: r['submit_then_wait']['client']['p50']):.2f} ms (target 3)")
    path = ROOT / "bench" / "results" / time.strftime("api-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(rounds, indent=1) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
