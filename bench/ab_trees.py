"""A/B: one Calculator from each of two source trees drains the same tasks
on the same database, runs interleaved, so a change's cost shows on a noisy
machine. Prints tasks/s and the parent's and children's CPU seconds per run.

    git archive <base-commit> | tar -x -C /tmp/base
    .venv/bin/python -m bench.ab_trees /tmp/base . --runs 4 --tasks 20000

The database schema is this tree's (migrations applied once); the other tree
must accept it (check_schema wants at least its own version).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from core.migrations import apply_migrations
from tools.pgcluster import LocalPostgres

INSERT = """INSERT INTO tasks (expression, variables)
    SELECT 'x*t**y', jsonb_build_object('x', 10 + g %% 7, 't', 11, 'y', 1) FROM generate_series(1, %s) g"""


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(root: str, url: str, conn: psycopg.Connection, count: int) -> tuple[float, float, float]:
    """(tasks/s, parent CPU s, children CPU s) of one Calculator from root."""
    conn.execute("TRUNCATE tasks RESTART IDENTITY")
    conn.execute("DELETE FROM calculators")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(DATABASE_URL=url, PYTHONPATH=root, LOG_LEVEL="WARNING", NUM_PROCESSES="2")
    calc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 300
        while not conn.execute("SELECT count(*) FROM calculators").fetchone()[0]:
            assert time.monotonic() < deadline and calc.poll() is None, "the Calculator did not start"
            time.sleep(0.05)
        conn.execute(INSERT, (count,))
        while conn.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0]:
            assert time.monotonic() < deadline and calc.poll() is None, "the queue did not drain"
            time.sleep(0.05)
        first, last = conn.execute("SELECT min(created_at), max(finished_at) FROM tasks").fetchone()
        children = Path(f"/proc/{calc.pid}/task/{calc.pid}/children").read_text().split()
        return (count / (last - first).total_seconds(), _cpu(calc.pid),
                sum(_cpu(int(pid)) for pid in children))
    finally:
        calc.terminate()
        calc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=20000)
    args = parser.parse_args()
    roots = {"A": str(Path(args.a).resolve()), "B": str(Path(args.b).resolve())}
    results: dict[str, list] = {name: [] for name in roots}
    with LocalPostgres(durable=True) as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            apply_migrations(conn)
            for run in range(args.runs):
                for name, root in roots.items():
                    rate, parent, children = drain(root, cluster.url, conn, args.tasks)
                    results[name].append(rate)
                    print(f"run {run + 1} {name} {rate:,.0f} tasks/s  CPU parent {parent:.2f} s, "
                          f"children {children:.2f} s", flush=True)
    for name, root in roots.items():
        rates = results[name]
        print(f"{name} {root}: median {statistics.median(rates):,.0f} tasks/s "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
