"""The noisy neighbour: how long key B waits for a bulk of quick tasks
beside key A's backlog, against B alone on the whole machine and on half of it.

    python -m bench.noisy_neighbour          (make bench runs it too)
    BENCH_QUICK=1 python -m bench.noisy_neighbour    a short run

The machine: 2 Calculators x NUM_PROCESSES=1 (so "half the machine" is one
Calculator), CALCULATION_TIMEOUT = CALCULATION_WALL_TIMEOUT = 2 s. B submits
a bulk of n quick tasks ("<g> + 1"), n = 1, 100, 1,000, 10,000; the figure
is B's completion time, from B's INSERT to B's last result (the database's
created_at and finished_at). Four cases for each n:

    alone          B on its own, 2 Calculators
    half machine   B on its own, 1 Calculator: the reference, what a fair
                   share of two equal tenants should come close to
    beside runaways    2 Calculators, A's backlog of runaways (9**(9**9),
                   each killed at the 2 s timeout) claimed first
    beside quick backlog   2 Calculators, A's backlog of 200,000 quick tasks
                   already being drained

Rows are inserted as the API inserts them: each key's rows take its next
fair rounds (next_fair_round()). B's wait beside A is bounded (PATIENCE):
past it the case is reported as "> N s" with the share of B's tasks done.
Writes bench/results/noisy-neighbour-<time>.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

from bench.common import database, reset, start_calculator
from tests.support import wait_for

QUICK = os.environ.get("BENCH_QUICK") == "1"
RUNS = int(os.environ.get("BENCH_RUNS", "1" if QUICK else "3"))
BULKS = (1, 100, 1_000) if QUICK else (1, 100, 1_000, 10_000)
RUNAWAYS = 200 if QUICK else 1_000
QUICK_BACKLOG = 20_000 if QUICK else 200_000
# How long B may wait beside A: PATIENCE_FACTOR x its time on half the
# machine, at least PATIENCE_MIN, at most PATIENCE_CAP seconds.
PATIENCE_FACTOR = 10.0
PATIENCE_MIN, PATIENCE_CAP = (15.0, 20.0) if QUICK else (30.0, 120.0)
TIMEOUT = 2.0
RUNAWAY = "9**(9**9)"
CASES = ("alone", "half machine", "beside runaways", "beside quick backlog")
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# As the API inserts: the key's rows take its next rounds, one after another.
INSERT_OF_KEY = """
    INSERT INTO tasks (expression, owner, fair_round)
    SELECT {expression}, %(owner)s, (SELECT next_fair_round(%(owner)s)) + g - 1
    FROM generate_series(1, %(n)s) g
"""
INSERT_QUICK = INSERT_OF_KEY.format(expression="g || ' + 1'")
INSERT_RUNAWAYS = INSERT_OF_KEY.format(expression="%(expression)s")


def key_id(conn: psycopg.Connection, name: str) -> int:
    """The id of the bench's key of that name (made once; owners must be keys)."""
    row = conn.execute("SELECT id FROM api_keys WHERE name = %s AND revoked_at IS NULL", (name,)).fetchone()
    if row is None:
        row = conn.execute("INSERT INTO api_keys (name, secret_sha256) VALUES (%s, sha256(%s::bytea)) "
                           "RETURNING id", (name, name.encode())).fetchone()
    return row[0]


def stop_all(calculators) -> None:
    for calc in calculators:
        try:
            calc.stop(timeout=15)
        except Exception:  # noqa: BLE001  (a Calculator stuck in shutdown: killed)
            calc.kill()


def one_case(url: str, conn: psycopg.Connection, case: str, n: int, a: int, b: int,
             patience: float) -> dict:
    """B's completion time for one case: {"seconds": s or None, "done": share of B's tasks done}."""
    reset(conn)
    calculators = [start_calculator(url, num_processes=1, calculation_timeout=TIMEOUT,
                                    calculation_wall_timeout=TIMEOUT)
                   for _ in range(1 if case == "half machine" else 2)]
    try:
        if case == "beside runaways":
            conn.execute(INSERT_RUNAWAYS, {"owner": a, "n": RUNAWAYS, "expression": RUNAWAY})
            # Both Calculators' one process on one of A's runaways.
            wait_for(lambda: conn.execute("SELECT count(*) FROM tasks WHERE attempts > 0").fetchone()[0] >= 2,
                     timeout=30, message="A's runaways to be claimed")
            time.sleep(0.3)
        elif case == "beside quick backlog":
            conn.execute(INSERT_QUICK, {"owner": a, "n": QUICK_BACKLOG})
            wait_for(lambda: conn.execute("SELECT count(*) FROM tasks WHERE status = 'done' AND owner = %s",
                                          (a,)).fetchone()[0] >= 100,
                     timeout=60, message="A's backlog to be drained")
        conn.execute(INSERT_QUICK, {"owner": b, "n": n})
        try:
            wait_for(lambda: not conn.execute("SELECT EXISTS (SELECT FROM tasks WHERE owner = %s AND "
                                              "status = 'pending')", (b,)).fetchone()[0],
                     timeout=patience, interval=0.02, message="B's tasks")
            finished = True
        except AssertionError:
            finished = False
        seconds, done = conn.execute(
            "SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8, "
            "count(*) FILTER (WHERE status = 'done') FROM tasks WHERE owner = %s", (b,)).fetchone()
        return {"seconds": seconds if finished else None, "done": done / n, "patience": patience}
    finally:
        stop_all(calculators)


def measure(url: str, conn: psycopg.Connection) -> dict:
    a, b = key_id(conn, "noisy-a"), key_id(conn, "noisy-b")
    figures: dict = {"settings": {"calculators": 2, "num_processes": 1, "calculation_timeout": TIMEOUT,
                                  "calculation_wall_timeout": TIMEOUT, "runaways": RUNAWAYS,
                                  "quick_backlog": QUICK_BACKLOG, "runs": RUNS},
                     "bulks": {}}
    print(f"the noisy neighbour: B's bulk beside A's backlog ({RUNAWAYS:,} runaways, or "
          f"{QUICK_BACKLOG:,} quick tasks), 2 Calculators x 1 process", flush=True)
    for n in BULKS:
        cases = figures["bulks"][str(n)] = {case: [] for case in CASES}
        for run in range(RUNS):
            for case in CASES:
                half = [r["seconds"] for r in cases["half machine"] if r["seconds"] is not None]
                patience = (min(PATIENCE_CAP, max(PATIENCE_MIN, PATIENCE_FACTOR * statistics.median(half)))
                            if half else PATIENCE_CAP)
                result = one_case(url, conn, case, n, a, b, patience)
                cases[case].append(result)
                print(f"  B's {n:,} run {run + 1}/{RUNS} {case:20}: {_shown(result)}", flush=True)
    return figures


def _shown(result: dict) -> str:
    if result["seconds"] is not None:
        return f"{result['seconds']:.2f} s"
    return f"> {result['patience']:.0f} s ({result['done'] * 100:.0f} % done)"


def _median(results: list[dict]) -> dict:
    """The median run (an unfinished run counts as the longest)."""
    ordered = sorted(results, key=lambda r: (r["seconds"] is None, r["seconds"] or 0, -r["done"]))
    return ordered[(len(ordered) - 1) // 2]


def report(figures: dict) -> None:
    header = ("B's bulk", *CASES, "runaways / half", "quick backlog / half")
    rows = [header]
    for n, cases in figures["bulks"].items():
        medians = {case: _median(results) for case, results in cases.items()}
        half = medians["half machine"]["seconds"]

        def ratio(case: str) -> str:
            seconds = medians[case]["seconds"]
            if half is None or not half:
                return "-"
            return f"{seconds / half:.1f}x" if seconds is not None else f"> {medians[case]['patience'] / half:.0f}x"
        rows.append((f"{int(n):,}", *(_shown(medians[case]) for case in CASES),
                     ratio("beside runaways"), ratio("beside quick backlog")))
    print("\nB's completion time, from its INSERT to its last result (median of runs):")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  " + "  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def main() -> int:
    with database() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            figures = measure(url, conn)
            figures["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
    figures["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report(figures)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("noisy-neighbour-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(figures, indent=2))
    print(f"\nfigures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
