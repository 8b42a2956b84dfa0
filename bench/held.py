"""The queue beside a held snapshot: does it keep its speed?

    make bench-held                      # = python -m bench.held
    BENCH_HELD_ROUNDS=5 BENCH_TASKS=20000 python -m bench.held --only snapshot,dump,raw

While any session holds a snapshot (pg_dump, a long report in REPEATABLE
READ, a client idle in transaction), no row version that died after it
began can be removed, and no index entry pointing at one can be marked dead.
This benchmark measures what that does to the queue:

- snapshot: one Calculator (NUM_PROCESSES=2) drains rounds of BENCH_TASKS
  tasks: clean rounds first, then BENCH_HELD_ROUNDS rounds while another
  session holds a REPEATABLE READ snapshot taken before them, then rounds
  after the snapshot is released, for up to a minute: each round's rate as a
  ratio of the clean rate, the dead rows, and how long recovery took;
- dump: the same with a real pg_dump of the database running in a loop;
- raw: the raw SQL loop (claim 100 by id with SKIP LOCKED, store 100) under
  the same held snapshot, side by side;
- steady: BENCH_STEADY_RATE tasks/s, one INSERT each (as API clients do),
  for BENCH_STEADY_SECONDS beside a session idle in transaction that has
  written (BEGIN; SELECT txid_current();), after a clean first slice: by
  slice of BENCH_SLICE_SECONDS, the latency from insert to result (p50,
  p99) and the Calculator's mean claim time (its calculator_claim_duration
  histogram), with the dead rows.

Figures go to bench/results/held-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

import psycopg

from bench.common import JOB, database, reset, start_calculator
from bench.throughput import INSERT_SAME, RAW_CLAIM, RAW_STORE
from tests.support import wait_for

TASKS = int(os.environ.get("BENCH_TASKS", "20000"))
CLEAN_ROUNDS = int(os.environ.get("BENCH_CLEAN_ROUNDS", "2"))
HELD_ROUNDS = int(os.environ.get("BENCH_HELD_ROUNDS", "5"))
RECOVERY_SECONDS = float(os.environ.get("BENCH_RECOVERY_SECONDS", "60"))
STEADY_RATE = int(os.environ.get("BENCH_STEADY_RATE", "1000"))
STEADY_SECONDS = float(os.environ.get("BENCH_STEADY_SECONDS", "600"))
SLICE_SECONDS = float(os.environ.get("BENCH_SLICE_SECONDS", "30"))
RESULTS_DIR = Path(__file__).resolve().parent / "results"

FINISHED = "SELECT coalesce(sum(n), 0) FROM task_counts WHERE status IN ('done', 'error')"
DEAD_ROWS = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'tasks'"


def drain_round(conn: psycopg.Connection, count: int) -> float:
    """Insert count tasks, wait for their outcomes; tasks/s from the first
    insert to the last result (database timestamps)."""
    finished_before = conn.execute(FINISHED).fetchone()[0]
    first = conn.execute("SELECT nextval('tasks_id_seq')").fetchone()[0]
    conn.execute(INSERT_SAME, (JOB, count))
    wait_for(lambda: conn.execute(FINISHED).fetchone()[0] >= finished_before + count,
             timeout=600, interval=0.05, message="the round to drain")
    started, ended = conn.execute(
        "SELECT min(created_at), max(finished_at) FROM tasks WHERE id > %s", (first,)).fetchone()
    return count / (ended - started).total_seconds()


def raw_round(conn: psycopg.Connection, count: int) -> float:
    """The same round drained by the raw SQL loop instead of a Calculator."""
    conn.execute(INSERT_SAME, (JOB, count))
    started = time.perf_counter()
    with psycopg.connect(conn.info.dsn, autocommit=True) as worker:
        while rows := worker.execute(RAW_CLAIM, prepare=True).fetchall():
            worker.execute(RAW_STORE, ([r[0] for r in rows], ["120"] * len(rows)), prepare=True)
    return count / (time.perf_counter() - started)


class HeldSnapshot:
    """A session that holds a REPEATABLE READ snapshot until released."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self.conn.execute("SELECT count(*) FROM tasks")

    def release(self) -> None:
        self.conn.commit()
        self.conn.close()


class DumpLoop:
    """pg_dump of the whole database, again and again, until stopped."""

    def __init__(self, url: str, cluster):
        self.url, self.cluster = url, cluster
        self.dumps = 0
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        program = self.cluster.server.program("pg_dump") if self.cluster else "pg_dump"
        while not self._stop.is_set():
            started = time.perf_counter()
            subprocess.run([program, "--dbname", self.url, "--file", os.devnull], check=True,
                           capture_output=True)
            self.seconds.append(time.perf_counter() - started)
            self.dumps += 1

    def release(self) -> None:
        self._stop.set()
        self._thread.join()


def rounds_beside(url: str, conn: psycopg.Connection, drain, holder_factory) -> dict:
    """Clean rounds, held rounds, then rounds after release for up to a minute."""
    reset(conn)
    clean = [drain(conn, TASKS) for _ in range(CLEAN_ROUNDS)]
    clean_rate = statistics.median(clean)
    holder = holder_factory()
    held = []
    for _ in range(HELD_ROUNDS):
        rate = drain(conn, TASKS)
        held.append({"ratio": round(rate / clean_rate, 3),
                     "dead_rows": conn.execute(DEAD_ROWS).fetchone()[0]})
        print(f"  held round: {held[-1]}", flush=True)
    extra = {}
    if isinstance(holder, DumpLoop):
        extra = {"dumps": holder.dumps, "dump_seconds": [round(s, 2) for s in holder.seconds]}
    holder.release()
    released_at = time.monotonic()
    after = []
    recovered_after = None
    while time.monotonic() - released_at < RECOVERY_SECONDS:
        rate = drain(conn, TASKS)
        since = time.monotonic() - released_at
        after.append({"seconds_after_release": round(since, 1), "ratio": round(rate / clean_rate, 3),
                      "dead_rows": conn.execute(DEAD_ROWS).fetchone()[0]})
        print(f"  after release: {after[-1]}", flush=True)
        if recovered_after is None and rate >= 0.9 * clean_rate:
            recovered_after = round(since, 1)
            break
    return {"clean_rate": round(clean_rate), "clean_runs": [round(r) for r in clean],
            "held": held, "after_release": after, "recovered_within_seconds": recovered_after, **extra}


def calculator_rounds(url: str, cluster, holder: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        calc = start_calculator(url, num_processes=2)
        try:
            factory = (lambda: HeldSnapshot(url)) if holder == "snapshot" else (lambda: DumpLoop(url, cluster))
            return rounds_beside(url, conn, drain_round, factory)
        finally:
            calc.stop()


def raw_rounds(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        return rounds_beside(url, conn, raw_round, lambda: HeldSnapshot(url))


def steady_beside_idle_writer(url: str) -> dict:
    """A steady load beside a session idle in transaction that has written."""
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn)
        calc = start_calculator(url, num_processes=2)
        holder = psycopg.connect(url)
        inserter = psycopg.connect(url, autocommit=True)
        inserter.execute("SET synchronous_commit = off")
        slices = []
        try:
            started = time.monotonic()
            sent = 0
            slice_start, claims_before = started, _claim_time(conn)
            first_id = conn.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0]
            while (now := time.monotonic()) - started < STEADY_SECONDS + SLICE_SECONDS:
                if holder.info.transaction_status == psycopg.pq.TransactionStatus.IDLE \
                        and now - started >= SLICE_SECONDS:
                    holder.execute("SELECT txid_current()")  # idle in transaction from here on
                due = int((now - started) * STEADY_RATE)
                while sent < due:
                    inserter.execute("INSERT INTO tasks (expression, variables) VALUES (%s, %s)",
                                     (JOB, '{"x": 10, "t": 11, "y": 1}'), prepare=True)
                    sent += 1
                if now - slice_start >= SLICE_SECONDS:
                    last_id = conn.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0]
                    claims_now = _claim_time(conn)
                    slices.append(_slice(conn, first_id, last_id, claims_before, claims_now,
                                         round(now - started), holding=len(slices) > 0))
                    print(f"  {slices[-1]}", flush=True)
                    slice_start, claims_before, first_id = now, claims_now, last_id
                time.sleep(0.001)
        finally:
            holder.rollback()
            holder.close()
            inserter.close()
            calc.stop()
    return {"rate": STEADY_RATE, "seconds": STEADY_SECONDS, "slices": slices}


def _claim_time(conn: psycopg.Connection) -> tuple[float, int, int]:
    """The Calculator's claims: total seconds and count (from its heartbeat's
    figures), and the entries read from the claim's index by everyone."""
    row = conn.execute("SELECT metrics -> 'claim_seconds' FROM calculators ORDER BY heartbeat_at DESC LIMIT 1"
                       ).fetchone()
    histogram = row[0] if row and row[0] else {"sum": 0.0, "counts": [0]}
    entries = conn.execute("SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'tasks_pending_fair'"
                           ).fetchone()[0]
    return histogram["sum"], sum(histogram["counts"]), entries


def _slice(conn, first_id, last_id, claims_before, claims_now, at: int, holding: bool) -> dict:
    p50, p99, pending = conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)), "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)), "
        "count(*) FILTER (WHERE finished_at IS NULL) FROM tasks WHERE id > %s AND id <= %s",
        (first_id, last_id)).fetchone()
    claims = claims_now[1] - claims_before[1]
    return {"at_seconds": at, "holding": holding, "tasks": last_id - first_id,
            "latency_p50_ms": round((p50 or 0) * 1000, 2), "latency_p99_ms": round((p99 or 0) * 1000, 2),
            "not_done_at_slice_end": pending, "claims": claims,
            "mean_claim_ms": round((claims_now[0] - claims_before[0]) / claims * 1000, 3) if claims else None,
            "claim_index_entries_per_claim": round((claims_now[2] - claims_before[2]) / claims, 1) if claims else None,
            "dead_rows": conn.execute(DEAD_ROWS).fetchone()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="snapshot,dump,raw,steady",
                        help="comma-separated: snapshot, dump, raw, steady")
    args = parser.parse_args()
    only = args.only.split(",")
    report: dict = {"tasks_per_round": TASKS}
    with database() as (url, cluster):
        if "snapshot" in only:
            print("Calculator beside a held REPEATABLE READ snapshot", flush=True)
            report["snapshot"] = calculator_rounds(url, cluster, "snapshot")
        if "dump" in only:
            print("Calculator beside pg_dump in a loop", flush=True)
            report["dump"] = calculator_rounds(url, cluster, "dump")
        if "raw" in only:
            print("raw SQL loop beside a held snapshot", flush=True)
            report["raw"] = raw_rounds(url)
        if "steady" in only:
            print(f"steady {STEADY_RATE}/s for {STEADY_SECONDS:.0f} s beside an idle-in-transaction writer",
                  flush=True)
            report["steady"] = steady_beside_idle_writer(url)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("held-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
