"""Before/after the grammar rewrite, in one run on one database.

    python -m bench.ab_grammar OLD_TREE [runs]

OLD_TREE is a checkout of the code before (git worktree add --detach DIR
21579bb). Calculators from both trees take turns draining the same 20,000
tasks (one text with varying variables: the parse cache at work; and 20,000
distinct texts: every one parsed), then the insert -> result latency of single
tasks at 50/s. Taking turns makes the ratios hold on a noisy machine.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bench.common import JOB, database, reset, wait_drained
from bench.throughput import INSERT_DISTINCT, INSERT_SAME, drain_rate

NEW_TREE = Path(__file__).resolve().parent.parent
TASKS = int(os.environ.get("BENCH_TASKS", "20000"))


def start(tree: Path, url: str) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=url, NUM_PROCESSES="2", LOG_LEVEL="WARNING",
               PYTHONPATH=str(tree))
    process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=tree, env=env)
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while not conn.execute("SELECT count(*) FROM calculators WHERE pid = %s",
                               (process.pid,)).fetchone()[0]:
            assert time.monotonic() < deadline and process.poll() is None, "Calculator did not start"
            time.sleep(0.02)
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def throughput(tree: Path, url: str, conn, distinct: bool) -> float:
    reset(conn)
    process = start(tree, url)
    try:
        conn.execute(INSERT_DISTINCT if distinct else INSERT_SAME, (JOB, TASKS))
        wait_drained(conn)
    finally:
        stop(process)
    assert conn.execute("SELECT count(*) FROM tasks WHERE status <> 'done'").fetchone()[0] == 0
    return drain_rate(conn, TASKS)


def latency(tree: Path, url: str, conn, seconds: float = 6, rate: float = 50) -> dict:
    reset(conn)
    process = start(tree, url)
    try:
        count = int(seconds * rate)
        for i in range(count):
            conn.execute("INSERT INTO tasks (expression, variables) VALUES (%s, %s)",
                         (JOB, '{"x": %d, "t": 11, "y": 1}' % (10 + i % 7)))
            time.sleep(1 / rate)
        wait_drained(conn)
    finally:
        stop(process)
    millis = sorted(r[0] for r in conn.execute(
        "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM tasks"))
    return {"p50": millis[len(millis) // 2], "p99": millis[int(len(millis) * 0.99)]}


def main() -> None:
    old_tree = Path(sys.argv[1]).resolve()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    figures = {name: {"old": [], "new": []} for name in ("same", "distinct", "p50", "p99")}
    with database() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            for run in range(runs):
                for label, tree in (("old", old_tree), ("new", NEW_TREE)):
                    figures["same"][label].append(throughput(tree, url, conn, False))
                    figures["distinct"][label].append(throughput(tree, url, conn, True))
                    lat = latency(tree, url, conn)
                    figures["p50"][label].append(lat["p50"])
                    figures["p99"][label].append(lat["p99"])
                print(f"run {run + 1}/{runs}: " + ", ".join(
                    f"{n} old {v['old'][-1]:,.1f} new {v['new'][-1]:,.1f}" for n, v in figures.items()),
                    flush=True)
    print("\nmedians (old -> new, ratio):")
    for name, values in figures.items():
        old, new = statistics.median(values["old"]), statistics.median(values["new"])
        unit = "tasks/s" if name in ("same", "distinct") else "ms"
        print(f"  {name:9} {old:10,.2f} -> {new:10,.2f} {unit}  ({new / old:.2f}x)")


if __name__ == "__main__":
    main()
