"""The claim after statistics taken while every pending task was leased.

    python -m bench.claim_statistics [--pending N] [--claims N]

autovacuum's ANALYZE may run while every pending task is leased (process_at
in the future: an ordinary busy moment). With the lease compared to now(),
the planner read process_at's histogram, believed that almost no row is
claimable, and chose a sequential scan and a sort of the whole table for
every claim until the next ANALYZE. sql/queries/claim_tasks.sql compares it
to (SELECT now()), which the planner cannot read the histogram for. This
times both forms of the claim (100 tasks, rolled back each time) over N
pending tasks, with such statistics, taking turns on one database.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from bench.common import database, reset
from core.database import load_query
from core.settings import CalculatorSettings

NEW = "process_at <= (SELECT now())"
OLD = "process_at <= now()"


def median_ms(conn: psycopg.Connection, query: str, claims: int) -> float:
    params = {"limit": 100, "lease_seconds": 30, "max_attempts": 5, "max_expression_length": 10_000,
              "max_variables_chars": 100_000, "after_place": None, "after_id": None, "skip": []}
    took = []
    for _ in range(claims):
        with conn.transaction(force_rollback=True):
            began = time.perf_counter()
            conn.execute(query, params).fetchall()
            took.append(time.perf_counter() - began)
    return statistics.median(took) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=20)
    args = parser.parse_args()
    new = load_query("claim_tasks")
    assert NEW in new, "the claim no longer compares the lease with (SELECT now())"
    old = new.replace(NEW, OLD)
    with database() as (url, _), psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        conn.execute("INSERT INTO tasks (expression, process_at) "
                     "SELECT '1', now() + interval '1 hour' FROM generate_series(1, 5000)")
        conn.execute("ANALYZE tasks")  # every pending task leased
        conn.execute("TRUNCATE tasks RESTART IDENTITY")  # the statistics stay
        conn.execute("INSERT INTO tasks (expression) SELECT '1' FROM generate_series(1, %s)", (args.pending,))
        for name, value in CalculatorSettings().session_settings().items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        for _ in range(2):
            for label, query in ((OLD, old), (NEW, new)):
                print(f"{label:30s} {median_ms(conn, query, args.claims):7.2f} ms a claim "
                      f"(median of {args.claims}) over {args.pending:,} pending")


if __name__ == "__main__":
    main()
