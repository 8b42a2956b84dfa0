"""What the benchmarks share: the database, Calculator processes, statistics."""

from __future__ import annotations

import os
import statistics
import tempfile
from contextlib import contextmanager
from pathlib import Path

import psycopg

from core.migrations import apply_migrations
from tests.support import CalculatorProcess, wait_for
from tools.pgcluster import LocalPostgres

JOB = "x*t**y + sin(x)"
JOB_VARIABLES = {"x": 10, "t": 11, "y": 1}
WORKDIR = Path(tempfile.mkdtemp(prefix="calculator-bench-"))


@contextmanager
def database():
    """BENCH_DATABASE_URL, else a local durable (fsync on) cluster of our own."""
    url = os.environ.get("BENCH_DATABASE_URL")
    cluster = None
    if not url:
        cluster = LocalPostgres(durable=True, settings={"shared_buffers": "256MB"}).start()
        url = cluster.url
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            apply_migrations(conn)
        yield url, cluster
    finally:
        if cluster:
            cluster.stop()


def reset(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE tasks RESTART IDENTITY")
    conn.execute("TRUNCATE calculators")
    conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    conn.execute("VACUUM ANALYZE tasks")


_started = 0


def start_calculator(url: str, **settings) -> CalculatorProcess:
    global _started
    _started += 1
    settings.setdefault("log_level", "WARNING")
    calc = CalculatorProcess(url, WORKDIR / f"calculator-{_started}.log", **settings)
    calc.wait_started() if settings["log_level"] == "INFO" else _wait_registered(url, calc)
    return calc


def _wait_registered(url: str, calc: CalculatorProcess) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM calculators WHERE pid = %s",
                                      (calc.pid,)).fetchone()[0] or calc.process.poll() is not None,
                 timeout=30, message="the Calculator to register")
    assert calc.process.poll() is None, calc.log()


def wait_drained(conn: psycopg.Connection, timeout: float = 600) -> None:
    wait_for(lambda: conn.execute("SELECT NOT EXISTS (SELECT FROM tasks WHERE status = 'pending')")
             .fetchone()[0], timeout=timeout, interval=0.02, message="the queue to drain")


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1], "n": len(ordered)}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
