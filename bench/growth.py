"""Growth: do costs grow with the history kept in `tasks`?

    make bench-growth                               # = python -m bench.growth: 0 / 1M / 5M finished rows
    BENCH_GROWTH_LEVELS=0,1000000,5000000,10000000 python -m bench.growth

Each level is a database of its own on one server, grown to that many
finished rows (bulk-inserted, then VACUUM ANALYZE and CHECKPOINT, as a table
that has run for a while would be), then measured:

- GET /api/stats through the app (median and max of BENCH_STATS_CALLS calls);
- one Calculator (NUM_PROCESSES=2) draining BENCH_TASKS new tasks, in tasks/s
  from the first insert to the last result (database timestamps), with what
  PostgreSQL did meanwhile (HOT updates, buffer reads, autovacuums,
  checkpoints);
- the table's size.

The drains run in rounds, each level once per round, and each level's rate
is compared with the first level's in the same round, so the ratio holds on
a noisy machine. Then the outcome counters' trigger is measured on and off
(BENCH_COUNTERS=0 skips that). Figures go to bench/results/.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from bench.common import JOB, database, reset, start_calculator, wait_drained
from core.migrations import apply_migrations
from bench.throughput import INSERT_SAME, RAW_CLAIM, RAW_STORE

LEVELS = [int(x) for x in os.environ.get("BENCH_GROWTH_LEVELS", "0,1000000,5000000").split(",")]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
TASKS = int(os.environ.get("BENCH_TASKS", "20000"))
STATS_CALLS = int(os.environ.get("BENCH_STATS_CALLS", "20"))
CHUNK = 500_000
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Finished a day ago: inside the default retention, so nothing is purged.
INSERT_FINISHED = """
    INSERT INTO tasks (expression, variables, created_at, status, process_at, attempts,
                       lease_token, result, finished_at)
    SELECT %s, jsonb_build_object('x', 10 + g %% 7, 't', 11, 'y', 1),
           now() - interval '1 day', 'done', now() - interval '1 day', 1,
           gen_random_uuid(), '120'::jsonb, now() - interval '1 day' + g * interval '1 microsecond'
    FROM generate_series(1, %s) g
"""

ACTIVITY = """
    SELECT n_tup_upd, n_tup_hot_upd, autovacuum_count, autoanalyze_count,
           (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
           (SELECT sum(heap_blks_read + coalesce(idx_blks_read, 0)) FROM pg_statio_user_tables
             WHERE relname = 'tasks')
    FROM pg_stat_user_tables WHERE relname = 'tasks'
"""
ACTIVITY_NAMES = ["updates", "hot_updates", "autovacuums", "autoanalyzes", "checkpoints", "blocks_read"]


def finished_rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM tasks WHERE status <> 'pending'").fetchone()[0]


def has_counters(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regprocedure('recount_tasks()') IS NOT NULL").fetchone()[0]


def grow_to(conn: psycopg.Connection, rows: int) -> float:
    started = time.perf_counter()
    have = finished_rows(conn)
    while have < rows:
        batch = min(CHUNK, rows - have)
        conn.execute(INSERT_FINISHED, (JOB, batch))
        have += batch
    if has_counters(conn):
        conn.execute("SELECT recount_tasks()")  # bulk-inserted finished rows are not counted by the triggers
    conn.execute("VACUUM ANALYZE tasks")
    conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def cpu_seconds(pids) -> float:
    """User + system CPU time of these processes (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def backend_pids(conn: psycopg.Connection) -> list[int]:
    """The server processes serving this database, except conn's own."""
    return [row[0] for row in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]


def activity(conn: psycopg.Connection) -> dict:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return dict(zip(ACTIVITY_NAMES, conn.execute(ACTIVITY).fetchone()))


def drain(url: str, conn: psycopg.Connection, calculators: int = 1) -> dict:
    first_new = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM tasks").fetchone()[0]
    running = [start_calculator(url, num_processes=2) for _ in range(calculators)]
    try:
        time.sleep(0.5)  # stats are flushed at most every 0.5 s
        before = activity(conn)
        backends = backend_pids(conn)
        calculators = [pid for calc in running for pid in (calc.pid, *calc.evaluator_pids())]
        cpu_before = cpu_seconds(backends), cpu_seconds(calculators)
        conn.execute(INSERT_SAME, (JOB, TASKS))
        wait_drained(conn)
        cpu_after = cpu_seconds(backends), cpu_seconds(calculators)
    finally:
        for calc in running:
            calc.stop()
    time.sleep(1.0)
    after = activity(conn)
    first, last, bad = conn.execute(
        "SELECT min(created_at), max(finished_at), count(*) FILTER (WHERE status <> 'done') "
        "FROM tasks WHERE id >= %s", (first_new,)).fetchone()
    assert bad == 0, f"{bad} tasks did not finish as done"
    rate = TASKS / (last - first).total_seconds()
    return {"rate": rate,
            "database_cpu_us_per_task": (cpu_after[0] - cpu_before[0]) / TASKS * 1e6,
            "calculator_cpu_us_per_task": (cpu_after[1] - cpu_before[1]) / TASKS * 1e6,
            **{k: (after[k] or 0) - (before[k] or 0) for k in ACTIVITY_NAMES}}


def counters_cost(url: str, conn: psycopg.Connection) -> dict:
    """What the outcome counters' trigger costs the database: the raw SQL loop
    (claim 100, store 100, no evaluation: the most one session can do) in 1
    and 2 concurrent sessions, with the trigger on and off, interleaved."""
    figures: dict = {}
    for run in range(RUNS):
        for sessions in (1, 2):
            for trigger in ("on", "off"):
                if trigger == "off":
                    conn.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_count_updates")
                try:
                    rate, cpu = raw_loops(conn, sessions)
                finally:
                    conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_count_updates")
                key = f"raw_loop_{sessions}_session{'s' if sessions > 1 else ''}_counters_{trigger}"
                figures.setdefault(key, []).append({"rate": rate, "database_cpu_us_per_task": cpu})
                print(f"  {key} run {run + 1}/{RUNS}: {rate:,.0f} tasks/s, database CPU {cpu:.1f} us/task",
                      flush=True)
    return figures


def raw_loops(conn: psycopg.Connection, sessions: int) -> tuple[float, float]:
    """tasks/s, and CPU microseconds per task of the sessions' server processes."""
    conn.execute(INSERT_SAME, (JOB, TASKS))
    workers = [psycopg.connect(conn.info.dsn, autocommit=True) for _ in range(sessions)]
    pids = [w.info.backend_pid for w in workers]

    def loop(worker) -> None:
        while rows := worker.execute(RAW_CLAIM, prepare=True).fetchall():
            worker.execute(RAW_STORE, ([r[0] for r in rows], ["0"] * len(rows)), prepare=True)

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    cpu = cpu_seconds(pids)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(pids) - cpu  # before closing: the server processes exit with them
    for worker in workers:
        worker.close()
    return TASKS / seconds, cpu / TASKS * 1e6


def stats_latency(client) -> dict:
    times = []
    for _ in range(STATS_CALLS):
        started = time.perf_counter()
        response = client.get("/api/stats")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.get_json()
    return {"median_ms": statistics.median(times), "max_ms": max(times), "body": response.get_json()}


def level_database(server_url: str, level: int) -> str:
    """A database of its own for one level, migrated, grown to `level` finished rows."""
    name = f"growth_{level}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(server_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_migrations(conn)
        reset(conn)
        seconds = grow_to(conn, level)
    print(f"{level:,} finished rows grown in {seconds:.0f} s", flush=True)
    return url


def main() -> int:
    from api import create_app
    figures: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tasks": TASKS, "runs": RUNS,
                     "levels": []}
    with database() as (server_url, _cluster):
        urls = {level: level_database(server_url, level) for level in LEVELS}
        for level, url in urls.items():
            app = create_app({"DATABASE_URL": url})
            stats = stats_latency(app.test_client())
            app.extensions["result_waiter"].close()
            app.extensions["pool"].close()
            with psycopg.connect(url, autocommit=True) as conn:
                size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('tasks'))").fetchone()[0]
            print(f"{level:,} finished rows ({size}): GET /api/stats median {stats['median_ms']:.1f} ms, "
                  f"max {stats['max_ms']:.1f} ms", flush=True)
            figures["levels"].append({"finished_rows": level, "size": size, "stats": stats, "drains": []})
        # Round after round, every level once per round: the machine's noise
        # falls on all levels alike.
        for run in range(RUNS):
            for entry in figures["levels"]:
                with psycopg.connect(urls[entry["finished_rows"]], autocommit=True) as conn:
                    entry["drains"].append(drain(urls[entry["finished_rows"]], conn))
                print(f"  round {run + 1}/{RUNS}, {entry['finished_rows']:,} rows: "
                      + json.dumps(entry["drains"][-1], default=float), flush=True)
        if os.environ.get("BENCH_COUNTERS", "1") == "1":
            with psycopg.connect(urls[LEVELS[0]], autocommit=True) as conn:
                figures["counters"] = counters_cost(urls[LEVELS[0]], conn)
    report(figures)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("growth-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nfigures written to {path}")
    return 0


def report(figures: dict) -> None:
    base = [d["rate"] for d in figures["levels"][0]["drains"]]
    print("\nfinished rows | table size | GET /api/stats median (max) | drain tasks/s median (runs) "
          "| vs first level, same round: median (each round)")
    for level in figures["levels"]:
        rates = [d["rate"] for d in level["drains"]]
        ratios = [r / b for r, b in zip(rates, base)]
        print(f"{level['finished_rows']:,} | {level['size']} | {level['stats']['median_ms']:.1f} ms "
              f"({level['stats']['max_ms']:.1f}) | {statistics.median(rates):,.0f} "
              f"({', '.join(f'{r:,.0f}' for r in rates)}) | {statistics.median(ratios):.2f}x "
              f"({', '.join(f'{r:.2f}' for r in ratios)})")
    print("\nfinished rows | database CPU per task, us: median (runs) | Calculator CPU per task, us")
    for level in figures["levels"]:
        db = [d["database_cpu_us_per_task"] for d in level["drains"]]
        calc = [d["calculator_cpu_us_per_task"] for d in level["drains"]]
        print(f"{level['finished_rows']:,} | {statistics.median(db):.1f} ({', '.join(f'{v:.1f}' for v in db)}) "
              f"| {statistics.median(calc):.1f} ({', '.join(f'{v:.1f}' for v in calc)})")
    if "counters" in figures:
        print("\ncounters trigger | tasks/s median (runs) | database CPU us/task median (runs)")
        for key, runs in figures["counters"].items():
            rates = [r["rate"] for r in runs]
            cpu = [r["database_cpu_us_per_task"] for r in runs]
            print(f"{key} | {statistics.median(rates):,.0f} ({', '.join(f'{r:,.0f}' for r in rates)}) "
                  f"| {statistics.median(cpu):.1f} ({', '.join(f'{c:.1f}' for c in cpu)})")


if __name__ == "__main__":
    sys.exit(main())
