"""Fair claiming: what it costs and what it gives.

    python -m bench.fairness [OLD_TREE] [--only claim,drain,scenario]
    (make bench runs it without OLD_TREE: the claim's cost and the scenario)

(a) the claim statement with 100,000 pending tasks: over 1,000 owners (and
    the same with 500 of them ahead, skipped by the claim), of one owner, of
    no owner: the time of a claim of 100, and of its release, taking turns
    in one run;
(b) with OLD_TREE (git worktree add --detach /tmp/before-13 91b94e4, the
    commit before API keys and fair claiming): one Calculator of each tree drains 20,000
    tasks of no owner and 20,000 of one owner (rounds set in the INSERT, as
    the API does), taking turns on one database, several rounds;
(c) the runaway-backlog scenario: A's 1,000 runaways queued first, then B's 20
    quick tasks: B's last result after its insert, with 1 and 3 Calculators.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bench.common import JOB, WORKDIR, database, reset, wait_drained
from bench.throughput import INSERT_SAME, drain_rate
from core.settings import CalculatorSettings
from tests.support import wait_for
from worker.task_queue import claim_tasks, release_tasks

NEW_TREE = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("BENCH_QUICK") == "1"
RUNS = int(os.environ.get("BENCH_RUNS", "1" if QUICK else "3"))
TASKS = int(os.environ.get("BENCH_TASKS", "2000" if QUICK else "20000"))
PENDING = 10_000 if QUICK else 100_000
CLAIMS = 50 if QUICK else 300

# (a) -----------------------------------------------------------------------

LOADS = {
    "1,000 owners": """INSERT INTO tasks (expression, owner, fair_round)
        SELECT '1', o, k FROM generate_series(1, %(n)s / 1000) k, generate_series(1, 1000) o""",
    "one owner": """INSERT INTO tasks (expression, owner, fair_round)
        SELECT '1', 1, g FROM generate_series(1, %(n)s) g""",
    "no owner": """INSERT INTO tasks (expression) SELECT '1' FROM generate_series(1, %(n)s) g""",
}
# The same queue as "1,000 owners", with every other owner ahead in
# evaluation time: the claim passes over their tasks (worker/fair_share.py).
LOADS["1,000 owners, 500 ahead"] = LOADS["1,000 owners"]
SKIPS = {"1,000 owners, 500 ahead": frozenset(range(2, 1001, 2))}


def claim_cost(conn: psycopg.Connection, load: str) -> dict:
    """Milliseconds per claim of 100 and per release of them, at the head of
    PENDING pending tasks (each release makes the same rows claimable again,
    so every claim meets the full queue)."""
    reset(conn)
    conn.execute(LOADS[load], {"n": PENDING})
    conn.execute("VACUUM ANALYZE tasks")
    claim_s = release_s = 0.0
    owners = set()
    with psycopg.connect(conn.info.dsn, autocommit=True) as calculator:
        for name, value in CalculatorSettings().session_settings().items():  # as a Calculator's
            calculator.execute("SELECT set_config(%s, %s, false)", (name, value))
        for _ in range(CLAIMS):
            started = time.perf_counter()
            tasks, _ = claim_tasks(calculator, 100, 30, 1_000_000, skip=SKIPS.get(load, frozenset()))
            claimed = time.perf_counter()
            release_tasks(calculator, tasks, count_attempt=False)
            released = time.perf_counter()
            claim_s += claimed - started
            release_s += released - claimed
            owners.update(t.owner for t in tasks)
            assert len(tasks) == 100
    return {"claim_ms": claim_s / CLAIMS * 1000, "release_ms": release_s / CLAIMS * 1000,
            "owners_per_claim": len(owners)}


# (b) -----------------------------------------------------------------------

INSERT_OWNED = """
    INSERT INTO tasks (expression, variables, owner, fair_round)
    SELECT %s, jsonb_build_object('x', 10 + g %% 7, 't', 11, 'y', 1), 1,
           (SELECT next_fair_round(1)) + g - 1
    FROM generate_series(1, %s) g
"""


def start(tree: Path, url: str, **settings) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(DATABASE_URL=url, NUM_PROCESSES="2", LOG_LEVEL="WARNING", PYTHONPATH=str(tree))
    env.update({k.upper(): str(v) for k, v in settings.items()})
    log = open(WORKDIR / f"fairness-{time.monotonic_ns()}.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=tree, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    with psycopg.connect(url, autocommit=True) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM calculators WHERE pid = %s",
                                      (process.pid,)).fetchone()[0] or process.poll() is not None,
                 timeout=30, message="the Calculator to register")
    assert process.poll() is None, "the Calculator exited"
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def drain(tree: Path, url: str, conn: psycopg.Connection, owned: bool) -> float:
    reset(conn)
    process = start(tree, url)
    try:
        conn.execute(INSERT_OWNED if owned else INSERT_SAME, (JOB, TASKS))
        wait_drained(conn)
    finally:
        stop(process)
    assert conn.execute("SELECT count(*) FROM tasks WHERE status <> 'done'").fetchone()[0] == 0
    return drain_rate(conn, TASKS)


# (c) -----------------------------------------------------------------------

RUNAWAY = "9**(9**9)"


def scenario(tree: Path, url: str, conn: psycopg.Connection, calculators: int, timeout: float,
             patience: float) -> float | None:
    """Seconds from B's insert to B's last result (None: not all done
    within patience seconds)."""
    reset(conn)
    processes = [start(tree, url, calculation_timeout=timeout) for _ in range(calculators)]
    try:
        conn.execute("INSERT INTO tasks (expression, owner) SELECT %s, 1 FROM generate_series(1, 1000)",
                     (RUNAWAY,))
        # Every child on one of A's runaways (each Calculator claimed some).
        wait_for(lambda: conn.execute("SELECT count(DISTINCT c.pid) FROM calculators c").fetchone()[0]
                 == calculators and conn.execute(
                     "SELECT count(*) FROM tasks WHERE attempts > 0").fetchone()[0] >= 2 * calculators,
                 timeout=30, message="A's runaways to be claimed")
        time.sleep(0.3)  # and started
        quick = [r[0] for r in conn.execute(
            "INSERT INTO tasks (expression, owner) SELECT g || ' + 1', 2 FROM generate_series(1, 20) g "
            "RETURNING id")]
        try:
            wait_for(lambda: not conn.execute("SELECT count(*) FROM tasks WHERE id = ANY(%s) AND "
                                              "status = 'pending'", (quick,)).fetchone()[0],
                     timeout=patience, interval=0.02, message="B's tasks")
        except AssertionError:
            return None
        return conn.execute("SELECT extract(epoch FROM max(finished_at) - min(created_at))::float "
                            "FROM tasks WHERE id = ANY(%s)", (quick,)).fetchone()[0]
    finally:
        conn.execute("SELECT cancel_tasks(array_agg(id)) FROM tasks WHERE status = 'pending'")
        for process in processes:
            stop(process)


# ---------------------------------------------------------------------------

def measure(url: str, conn: psycopg.Connection, old_tree: Path | None = None,
            parts: tuple[str, ...] = ("claim", "drain", "scenario")) -> dict:
    # Owners are API keys' ids (sql/010 checks a psql owner): keys 1 to 1,000.
    conn.execute("INSERT INTO api_keys (name, secret_sha256) "
                 "SELECT 'bench' || g, sha256(g::text::bytea) FROM generate_series(1, 1000) g "
                 "WHERE NOT EXISTS (SELECT FROM api_keys)")
    figures: dict = {"claim_cost": {load: [] for load in LOADS}, "pending": PENDING, "scenario": {}}
    if "claim" in parts:
        print(f"claim of 100 and release, {PENDING:,} pending", flush=True)
    for run in range(RUNS if "claim" in parts else 0):
        for load in LOADS:
            cost = claim_cost(conn, load)
            figures["claim_cost"][load].append(cost)
            print(f"  run {run + 1}/{RUNS} {load:13}: claim {cost['claim_ms']:.2f} ms, release "
                  f"{cost['release_ms']:.2f} ms, {cost['owners_per_claim']} owner(s) in the claims",
                  flush=True)
    if old_tree is not None and "drain" in parts:
        print(f"single-owner throughput, {TASKS:,} tasks, old {old_tree} vs new", flush=True)
        drains = figures["drain"] = {f"{tree} {kind}": [] for tree in ("old", "new")
                                     for kind in ("no owner", "one owner")}
        for run in range(RUNS):
            for owned in (False, True):
                for label, tree in (("old", old_tree), ("new", NEW_TREE)):
                    rate = drain(tree, url, conn, owned)
                    key = f"{label} {'one owner' if owned else 'no owner'}"
                    drains[key].append(rate)
                    print(f"  run {run + 1}/{RUNS} {key:14}: {rate:,.0f} tasks/s", flush=True)
    if "scenario" not in parts:
        return figures
    print("the scenario: A's 1,000 runaways, then B's 20 quick tasks", flush=True)
    timeouts = (2.5,) if QUICK else (2.5, 10.0)
    for timeout in timeouts:
        for calculators in (1, 3):
            key = f"CALCULATION_TIMEOUT={timeout:g}, {calculators} Calculator(s)"
            values = []
            for run in range(RUNS):
                took = scenario(NEW_TREE, url, conn, calculators, timeout, patience=timeout + 10)
                values.append(took)
                print(f"  run {run + 1}/{RUNS} {key}: B's last result "
                      f"{'not within %g s' % (timeout + 10) if took is None else '%.2f s' % took} "
                      f"after its insert", flush=True)
            figures["scenario"][key] = values
    if old_tree is not None:
        took = scenario(old_tree, url, conn, 1, 2.5, patience=20)
        figures["scenario"]["old tree, CALCULATION_TIMEOUT=2.5, 1 Calculator"] = [took]
        print(f"  old tree, CALCULATION_TIMEOUT=2.5, 1 Calculator: B's last result "
              f"{'not within 20 s' if took is None else '%.2f s' % took}", flush=True)
    return figures


def report(figures: dict) -> None:
    print(f"\nclaim of 100 + release with {figures['pending']:,} pending (median of runs, ms):")
    for load, runs in figures["claim_cost"].items():
        if not runs:
            continue
        print(f"  {load:13} claim {statistics.median(r['claim_ms'] for r in runs):6.2f}   "
              f"release {statistics.median(r['release_ms'] for r in runs):6.2f}")
    if "drain" in figures:
        d = {k: statistics.median(v) for k, v in figures["drain"].items()}
        print("drain rate (median tasks/s):")
        for kind in ("no owner", "one owner"):
            old, new = d[f"old {kind}"], d[f"new {kind}"]
            paired = [n / o for n, o in zip(figures["drain"][f"new {kind}"], figures["drain"][f"old {kind}"])]
            print(f"  {kind:9}  old {old:8,.0f}  new {new:8,.0f}  ({new / old:.2f}x; run by run: "
                  f"median {statistics.median(paired):.2f}x, {min(paired):.2f}-{max(paired):.2f})")
    print("B's last result after its insert (s):")
    for key, values in figures["scenario"].items():
        shown = ", ".join("-" if v is None else f"{v:.2f}" for v in values)
        print(f"  {key}: {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_tree", nargs="?")
    parser.add_argument("--only", default="claim,drain,scenario")
    args = parser.parse_args()
    old_tree = Path(args.old_tree).resolve() if args.old_tree else None
    with database() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            figures = measure(url, conn, old_tree, tuple(args.only.split(",")))
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
