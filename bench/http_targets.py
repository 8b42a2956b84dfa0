"""make bench-http: the front door's three targets, side by side.

    python -m bench.http_targets     # BENCH_RUNS (3) rounds of BENCH_LOAD_SECONDS (5) per figure

On one durable PostgreSQL of our own, the API under its production config
(gunicorn, api/gunicorn.conf.py: gevent workers, WEB_CONCURRENCY 2), wrk with
keep-alive connections, and pgbench with as many clients; each round runs
the API's figure and pgbench's one after the other (which goes first
alternates from round to round), and each ratio is the median of the
rounds' ratios, since pgbench's commit rate moves with the disk:

  1. POST /api/expression vs pgbench's single-row INSERT INTO tasks, at 4
     and at 64 connections (target >= 0.75x; goal 1.0x)
  2. GET /api/result/<id> of a finished task vs pgbench's SELECT ... WHERE
     id = :id, at 64 connections (target >= 0.3x)
  3. HTTP submit -> result p50 at 200 req/s (one keep-alive client, POST
     then GET ?wait=) vs the INSERT -> result p50 of tasks inserted from SQL
     at the same rate (target <= 1.5x), two ways: from the database's own
     timestamps (created_at -> finished_at: no client round trip, the
     strictest reading), and from a SQL client's clock (INSERT ... RETURNING,
     wait for the LISTEN notification naming the id, SELECT; what a psql
     session does at best: bench.latency.sql_client_latency)

Beside them, the same POSTs with GROUP_COMMIT=off (each submission its own
transaction, as before group commit), and POST p50 at 1 connection both ways (a
lone request must not be slower). Then the CPU profile of one POST and one
GET (bench/request_profile.py).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bench import latency, request_profile
from bench.common import WORKDIR, database, reset
from bench.http_load import SUBMISSION, gunicorn, load, pgbench_insert_tps
from tests.support import ROOT

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "5"))
RATE = float(os.environ.get("BENCH_LATENCY_RATE", "200"))
FINISHED = 1000


def pgbench_select_tps(cluster, clients: int, seconds: int) -> float:
    """pgbench reading one task by id (ids 1..FINISHED, finished tasks)."""
    script = Path(WORKDIR) / "select.sql"
    script.write_text(f"\\set id random(1, {FINISHED})\n"
                      "SELECT status, result, error FROM tasks WHERE id = :id;\n")
    os.chmod(WORKDIR, 0o755)
    os.chmod(script, 0o644)
    output = subprocess.run(
        [str(cluster.bindir / "pgbench"), "-n", "-h", str(cluster.socket_dir),
         "-p", str(cluster.port), "-U", "postgres", "-c", str(clients), "-j", str(min(clients, 2)),
         "-T", str(seconds), "-f", str(script), "postgres"],
        check=True, capture_output=True, text=True).stdout
    for line in output.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench output:\n{output}")


def _finished_tasks(conn: psycopg.Connection) -> None:
    reset(conn)
    conn.execute("INSERT INTO tasks (expression, status, result, finished_at) "
                 f"SELECT '1+1', 'done', '2', now() FROM generate_series(1, {FINISHED})")


def _pair(api, pg, api_first: bool) -> tuple:
    if api_first:
        a = api()
        return a, pg()
    p = pg()
    return api(), p


def one_round(url: str, cluster, conn, base: str, base_off: str, api_first: bool) -> dict:
    seconds = max(2, int(SECONDS))
    f: dict = {}
    # 3. latency first: it empties the table and needs a Calculator.
    measures = [("http_latency", lambda: latency.http_latency(url, conn, base, RATE, SECONDS)),
                ("sql_latency", lambda: latency.sql_latency(url, conn, RATE, SECONDS)),
                ("sql_client_latency", lambda: latency.sql_client_latency(url, conn, RATE, SECONDS))]
    for name, measure in (measures if api_first else measures[::-1]):
        f[name] = measure()
    _finished_tasks(conn)
    gets = [f"/api/result/{i}" for i in range(1, FINISHED + 1)]
    f["get_64"], f["pgbench_select_64"] = _pair(
        lambda: load(base, "GET", gets, None, 64, SECONDS), lambda: pgbench_select_tps(cluster, 64, seconds),
        api_first)
    for clients in (4, 64):
        f[f"post_{clients}"], f[f"pgbench_insert_{clients}"] = _pair(
            lambda: load(base, "POST", ["/api/expression"], SUBMISSION, clients, SECONDS),
            lambda: pgbench_insert_tps(cluster, clients, seconds), api_first)
        f[f"post_{clients}_group_commit_off"] = load(base_off, "POST", ["/api/expression"], SUBMISSION,
                                                     clients, SECONDS)
    # A lone client: p50 with and without group commit, alternating.
    for name, server in ((("post_1", base), ("post_1_group_commit_off", base_off)) if api_first
                         else (("post_1_group_commit_off", base_off), ("post_1", base))):
        f[name] = load(server, "POST", ["/api/expression"], SUBMISSION, 1, SECONDS)
    return f


def ratios(f: dict) -> dict:
    rps = lambda name: f[name].get("requests_per_second", 0.0)  # noqa: E731
    return {
        "post_4": rps("post_4") / f["pgbench_insert_4"],
        "post_64": rps("post_64") / f["pgbench_insert_64"],
        "get_64": rps("get_64") / f["pgbench_select_64"],
        "latency": f["http_latency"]["client"]["p50"] / f["sql_latency"]["p50"],
        "latency_client": f["http_latency"]["client"]["p50"] / f["sql_client_latency"]["client"]["p50"],
        "post_4_off": rps("post_4_group_commit_off") / f["pgbench_insert_4"],
        "post_64_off": rps("post_64_group_commit_off") / f["pgbench_insert_64"],
        "lone_p50": f["post_1"]["p50_ms"] / f["post_1_group_commit_off"]["p50_ms"],
    }


TARGETS = [("post_4", "POST vs pgbench INSERT, 4 connections", ">=", 0.75),
           ("post_64", "POST vs pgbench INSERT, 64 connections", ">=", 0.75),
           ("get_64", "GET vs pgbench SELECT by id, 64 connections", ">=", 0.3),
           ("latency", f"submit->result p50 at {RATE:g}/s, HTTP vs SQL (db clock)", "<=", 1.5),
           ("latency_client", f"submit->result p50 at {RATE:g}/s, HTTP vs SQL client", "<=", 1.5),
           ("lone_p50", "POST p50 at 1 connection, group commit on vs off", "<=", 1.1)]


def report(rounds: list[dict]) -> dict:
    per_round = [ratios(f) for f in rounds]
    median = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    print(f"\n{'target':52} {'median':>7} {'rounds':>24}  goal")
    for key, label, op, goal in TARGETS:
        met = median[key] >= goal if op == ">=" else median[key] <= goal
        runs = " ".join(f"{r[key]:.2f}" for r in per_round)
        print(f"{label:52} {median[key]:6.2f}x {runs:>24}  {op} {goal} {'met' if met else 'NOT MET'}")
    print(f"{'  (group commit off) POST vs INSERT, 4 / 64':52} {median['post_4_off']:6.2f}x / "
          f"{median['post_64_off']:.2f}x")
    print("\nraw figures per round (req/s or TPS; ms):")
    for i, f in enumerate(rounds, 1):
        print(f"  round {i}: POST 4 {f['post_4'].get('requests_per_second', 0):,.0f} "
              f"(off {f['post_4_group_commit_off'].get('requests_per_second', 0):,.0f}) vs INSERT "
              f"{f['pgbench_insert_4']:,.0f}; POST 64 {f['post_64'].get('requests_per_second', 0):,.0f} "
              f"(off {f['post_64_group_commit_off'].get('requests_per_second', 0):,.0f}) vs INSERT "
              f"{f['pgbench_insert_64']:,.0f}; GET 64 {f['get_64'].get('requests_per_second', 0):,.0f} vs "
              f"SELECT {f['pgbench_select_64']:,.0f}; p50 HTTP {f['http_latency']['client']['p50']:.2f} "
              f"vs SQL {f['sql_latency']['p50']:.2f} (db clock), {f['sql_client_latency']['client']['p50']:.2f} "
              f"(SQL client); lone POST p50 {f['post_1']['p50_ms']:.2f} "
              f"(off {f['post_1_group_commit_off']['p50_ms']:.2f})")
    return median


def main() -> int:
    rounds = []
    with database() as (url, cluster):
        if cluster is None:
            raise SystemExit("make bench-http needs a cluster of its own (unset BENCH_DATABASE_URL): "
                             "it runs pgbench against it")
        with psycopg.connect(url, autocommit=True) as conn, \
                gunicorn(url) as (base, _), gunicorn(url, GROUP_COMMIT="off") as (base_off, _):
            for run in range(RUNS):
                figures = one_round(url, cluster, conn, base, base_off, api_first=run % 2 == 0)
                rounds.append(figures)
                r = ratios(figures)
                print(f"round {run + 1}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()), flush=True)
            median = report(rounds)
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn)
        profile = request_profile.run(url)
    print("\nCPU per request in the API process (bench/request_profile.py, in-process, no server):")
    request_profile.report(profile)
    path = ROOT / "bench" / "results" / time.strftime("http-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({"rounds": rounds, "median_ratios": median, "profile": profile}, indent=1) + "\n")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
