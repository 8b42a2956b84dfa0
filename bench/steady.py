"""Steady state: does the table stay the same size under a constant load
with a short retention?

    make bench-steady        # = python -m bench.steady

One Calculator with RESULT_RETENTION=BENCH_RETENTION (default 10s); tasks
inserted at BENCH_RATE per second (default 2,000, in 10 inserts a second) for
BENCH_SECONDS (default 180); the table's total size (heap, indexes, TOAST),
its live and dead rows and autovacuum runs are sampled every 15 s. Without
retention the table would grow by rate x seconds rows (about 245 bytes each).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psycopg

from bench.common import JOB, database, reset, start_calculator

RATE = int(os.environ.get("BENCH_RATE", "2000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "180"))
RETENTION = os.environ.get("BENCH_RETENTION", "10s")
# e.g. "autovacuum_vacuum_scale_factor=0,autovacuum_vacuum_threshold=10000" to try table settings
TABLE_SETTINGS = os.environ.get("BENCH_TABLE_SETTINGS", "")
# the server's autovacuum_naptime (default 1min), e.g. 10s
NAPTIME = os.environ.get("BENCH_AUTOVACUUM_NAPTIME", "")
SAMPLE_SECONDS = 15.0
TICKS_PER_SECOND = 10
RESULTS_DIR = Path(__file__).resolve().parent / "results"

INSERT = """
    INSERT INTO tasks (expression, variables)
    SELECT %s, jsonb_build_object('x', 10 + g %% 7, 't', 11, 'y', 1) FROM generate_series(1, %s) g
"""
SAMPLE = """
    SELECT pg_total_relation_size('tasks'), n_live_tup, n_dead_tup, autovacuum_count,
           (SELECT count(*) FROM tasks WHERE status = 'pending')
    FROM pg_stat_user_tables WHERE relname = 'tasks'
"""


def main() -> int:
    samples = []
    with database() as (url, _cluster):
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn)
            if NAPTIME:
                conn.execute(f"ALTER SYSTEM SET autovacuum_naptime = '{NAPTIME}'")
                conn.execute("SELECT pg_reload_conf()")
            if TABLE_SETTINGS:
                conn.execute(f"ALTER TABLE tasks SET ({TABLE_SETTINGS})")
            calc = start_calculator(url, num_processes=2, result_retention=RETENTION)
            try:
                started = time.monotonic()
                next_sample = started
                tick = 0
                while (now := time.monotonic()) - started < SECONDS:
                    conn.execute(INSERT, (JOB, RATE // TICKS_PER_SECOND))
                    tick += 1
                    if now >= next_sample:
                        size, live, dead, vacuums, pending = conn.execute(SAMPLE).fetchone()
                        samples.append({"seconds": round(now - started), "size_mb": round(size / 2**20, 1),
                                        "live": live, "dead": dead, "autovacuums": vacuums,
                                        "pending": pending, "inserted": tick * (RATE // TICKS_PER_SECOND)})
                        print(json.dumps(samples[-1]), flush=True)
                        next_sample += SAMPLE_SECONDS
                    time.sleep(max(0.0, started + tick / TICKS_PER_SECOND - time.monotonic()))
            finally:
                calc.stop()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("steady-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({"rate": RATE, "seconds": SECONDS, "retention": RETENTION,
                                "table_settings": TABLE_SETTINGS, "autovacuum_naptime": NAPTIME or "1min",
                                "samples": samples}, indent=2))
    print(f"\nfigures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
