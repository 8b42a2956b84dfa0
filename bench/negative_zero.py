"""What a variable -0.0 costs one Calculator: the same 20,000 tasks
(x*t**y with x = 0.0) drained with x a plain 0.0 and with x named in
variables_negative_zero (sql/016), rounds interleaved on one durable
database, by one Calculator of this tree (bench/ab_trees.py's drain).

    .venv/bin/python -m bench.negative_zero --runs 4 --tasks 20000
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import psycopg

from bench import ab_trees
from core.migrations import apply_migrations
from tools.pgcluster import LocalPostgres

INSERTS = {
    "0.0": """INSERT INTO tasks (expression, variables)
        SELECT 'x*t**y', jsonb_build_object('x', 0.0, 't', 11 + g %% 7, 'y', 1) FROM generate_series(1, %s) g""",
    "-0.0": """INSERT INTO tasks (expression, variables, variables_negative_zero)
        SELECT 'x*t**y', jsonb_build_object('x', 0.0, 't', 11 + g %% 7, 'y', 1), '{x}'
        FROM generate_series(1, %s) g""",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=20000)
    args = parser.parse_args()
    root = str(Path(__file__).resolve().parent.parent)
    rates: dict[str, list[float]] = {name: [] for name in INSERTS}
    with LocalPostgres(durable=True) as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            apply_migrations(conn)
            for run in range(args.runs):
                for name, insert in INSERTS.items():
                    ab_trees.INSERT = insert
                    rate, parent, children = ab_trees.drain(root, cluster.url, conn, args.tasks)
                    signed = conn.execute("SELECT count(*) FILTER (WHERE result_negative_zero) FROM tasks").fetchone()[0]
                    assert signed == (args.tasks if name == "-0.0" else 0), signed
                    rates[name].append(rate)
                    print(f"run {run + 1} x={name} {rate:,.0f} tasks/s  CPU parent {parent:.2f} s, "
                          f"children {children:.2f} s", flush=True)
    for name, values in rates.items():
        print(f"x={name}: median {statistics.median(values):,.0f} tasks/s")
    print(f"ratio -0.0 / 0.0: {statistics.median(rates['-0.0']) / statistics.median(rates['0.0']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
