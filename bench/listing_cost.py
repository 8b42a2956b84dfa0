"""What GET /api/tasks's indexes (sql/013) cost the queue's writes.

    python -m bench.listing_cost [rounds] [seconds]

Alternates rounds with and without the three indexes (dropped and created
again on the same database), each round timing, for `seconds` each:
  - single-row INSERTs of a key's task (owner set: the row enters
    tasks_listing_by_owner), one statement a transaction;
  - bulk INSERTs of 1,000 such rows;
  - stores (UPDATE to done, the Calculator's write), one row a transaction.
Prints rows per second per round and the median of the rounds' ratios with/without.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import psycopg

from api.keys import create_key
from bench.common import database, reset

INDEXES = {
    "tasks_listing_by_owner": "CREATE INDEX tasks_listing_by_owner ON tasks (owner, status, id) "
                              "WHERE owner IS NOT NULL",
    "tasks_cancelled_by_id": "CREATE INDEX tasks_cancelled_by_id ON tasks (id) WHERE status = 'cancelled'",
}


def timed(seconds: float, step) -> float:
    """Rows per second of step() (which returns how many rows it wrote)."""
    rows, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        rows += step()
    return rows / (time.perf_counter() - started)


def one_round(conn: psycopg.Connection, owner: int, seconds: float) -> dict:
    reset(conn)

    def single():
        conn.execute("INSERT INTO tasks (expression, owner, fair_round) VALUES ('1+1', %s, 1)", (owner,))
        return 1

    def bulk():
        conn.execute("INSERT INTO tasks (expression, owner, fair_round) "
                     "SELECT '1+1', %s, 1 FROM generate_series(1, 1000)", (owner,))
        return 1000

    pending = iter(())

    def store():
        nonlocal pending
        task_id = next(pending, None)
        if task_id is None:
            pending = iter([r[0] for r in conn.execute(
                "SELECT id FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 10000")])
            task_id = next(pending)
        conn.execute("UPDATE tasks SET status = 'done', result = '2', finished_at = now() "
                     "WHERE id = %s AND status = 'pending'", (task_id,))
        return 1

    return {"insert_one": timed(seconds, single), "insert_bulk": timed(seconds, bulk),
            "store_one": timed(seconds, store)}


def run(url: str, rounds: int, seconds: float) -> dict:
    figures: dict[str, list[dict]] = {"with": [], "without": []}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE api_keys RESTART IDENTITY CASCADE")
        create_key(conn, "bench")
        try:
            for number in range(rounds):
                # Alternating which goes first, so that a drift of the machine's load favours neither.
                for variant in (("without", "with") if number % 2 == 0 else ("with", "without")):
                    for name, ddl in INDEXES.items():
                        conn.execute(f"DROP INDEX IF EXISTS {name}")
                        if variant == "with":
                            conn.execute(ddl)
                    figures[variant].append(one_round(conn, 1, seconds))
        finally:
            for name, ddl in INDEXES.items():
                conn.execute(f"DROP INDEX IF EXISTS {name}")
                conn.execute(ddl)
    # The machine is shared and noisy: the median of each round's own ratio.
    ratios = {k: statistics.median(w[k] / wo[k] for w, wo in zip(figures["with"], figures["without"]))
              for k in figures["with"][0]}
    return {"rounds": rounds, "seconds": seconds,
            "rows_per_second": {v: [{k: round(x) for k, x in r.items()} for r in rs] for v, rs in figures.items()},
            "median_ratio_with_to_without": {k: round(v, 3) for k, v in ratios.items()}}


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3
    with database() as (url, _):
        print(json.dumps(run(url, rounds, seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
