"""The claim's plan when the statistics are wrong.

    python -m bench.claim_plans

20,000 pending tasks that the statistics do not know about: a table
analyzed while empty (a fresh one), or after a long history of finished rows
(before autovacuum analyzes a burst). For the claim as committed and with
status = 'pending' added to its WHERE (as it was in migration 010's version),
with bitmap scans on and off (the Calculator's session turns them off), the
custom and the generic plan: the scan the planner picks and the time of one
claim of 100 (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import psycopg

from bench.common import JOB, database, reset
from bench.throughput import INSERT_SAME
from core.database import load_query

PARAMS = {"limit": 100, "lease_seconds": 30, "max_attempts": 5, "max_expression_length": 10_000,
          "max_variables_chars": 100_000, "skip": []}


def variants() -> dict[str, str]:
    committed = "\n".join(line for line in load_query("claim_tasks").splitlines()
                          if not line.startswith("--"))
    with_status = committed.replace("WHERE finished_at IS NULL AND process_at",
                                    "WHERE finished_at IS NULL AND status = 'pending' AND process_at")
    assert with_status != committed
    return {"as committed": committed, "with status = 'pending'": with_status}


def main() -> None:
    with database() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            for history in (False, True):
                for name, query in variants().items():
                    for bitmap in ("on", "off"):
                        reset(conn)
                        if history:
                            conn.execute("INSERT INTO tasks (expression, status, result, finished_at) "
                                         "SELECT '1', 'done', '1', now() FROM generate_series(1, 200000)")
                            conn.execute("ANALYZE tasks")
                        conn.execute(INSERT_SAME, (JOB, 20000))
                        conn.execute(f"SET enable_bitmapscan = {bitmap}")
                        for mode in ("custom", "generic"):
                            conn.execute(f"SET plan_cache_mode = force_{mode}_plan")
                            plan = [r[0] for r in conn.execute("EXPLAIN (ANALYZE) " + query, PARAMS)]
                            scan = next(line.strip().lstrip("-> ").split("  (")[0] for line in plan
                                        if " on tasks " in line and "Scan" in line and "CTE" not in line)
                            took = next(line for line in plan if line.startswith("Execution Time"))
                            print(f"{'history' if history else 'fresh':7}  {name:25} bitmap {bitmap:3} "
                                  f"{mode:7}  {took.split(': ')[1]:>10}  {scan}", flush=True)
                        conn.execute("RESET ALL")


if __name__ == "__main__":
    main()
