"""What it costs a psql INSERT that rows without an owner take turns as one tenant.

    python -m bench.unowned_rounds [--runs N]

Rows without an owner get their fair round from a sequence (the column's
default, one nextval a row) moved up to the queue's head by a statement
trigger (sql/017_fair_share_of_time.sql). This times, taking turns on one
database, the same INSERTs with that default and trigger and without them
(as before: the round NULL, the place the id):

  - a bulk: INSERT ... SELECT of 100,000 rows (20,000 with BENCH_QUICK=1);
  - single rows: 2,000 one-row INSERTs, each its own statement and
    transaction, as a psql script of INSERTs runs them.

The promise: a bulk INSERT at most 10 % slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psycopg

from bench.common import database, reset

QUICK = os.environ.get("BENCH_QUICK") == "1"
BULK = 20_000 if QUICK else 100_000
SINGLE = 500 if QUICK else 2_000

WITHOUT = ["ALTER TABLE tasks DISABLE TRIGGER tasks_place_unowned",
           "ALTER TABLE tasks ALTER COLUMN fair_round DROP DEFAULT"]
WITH = ["ALTER TABLE tasks ENABLE TRIGGER tasks_place_unowned",
        "ALTER TABLE tasks ALTER COLUMN fair_round SET DEFAULT nextval('tasks_unowned_round')"]


def timed(conn: psycopg.Connection, kind: str) -> float:
    reset(conn)
    began = time.perf_counter()
    if kind == "bulk":
        conn.execute("INSERT INTO tasks (expression) SELECT g || ' + 1' FROM generate_series(1, %s) g", (BULK,))
    else:
        for n in range(SINGLE):
            conn.execute("INSERT INTO tasks (expression) VALUES (%s)", (f"{n} + 1",))
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3 if QUICK else 7)
    args = parser.parse_args()
    figures = {(kind, variant): [] for kind in ("bulk", "single") for variant in ("without", "with")}
    with database() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            try:
                for run in range(args.runs):
                    for kind in ("bulk", "single"):
                        for variant, statements in (("without", WITHOUT), ("with", WITH)):
                            for statement in statements:
                                conn.execute(statement)
                            figures[(kind, variant)].append(timed(conn, kind))
                    print(f"run {run + 1}/{args.runs}: " + ", ".join(
                        f"{k} {v} {figures[(k, v)][-1]:.3f} s" for k, v in figures), flush=True)
            finally:
                for statement in WITH:
                    conn.execute(statement)
    print(f"\nrows without an owner as one tenant: INSERT time with / without (median of {args.runs}, "
          "and run by run)")
    for kind, label in (("bulk", f"bulk of {BULK:,}"), ("single", f"{SINGLE:,} one-row INSERTs")):
        with_, without = figures[(kind, "with")], figures[(kind, "without")]
        paired = [w / o for w, o in zip(with_, without)]
        print(f"  {label:24} {statistics.median(with_):.3f} s / {statistics.median(without):.3f} s = "
              f"{statistics.median(with_) / statistics.median(without):.2f}x "
              f"(run by run {min(paired):.2f}-{max(paired):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
