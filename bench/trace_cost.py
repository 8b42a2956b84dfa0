"""What the trace context costs the queue: one Calculator (2 evaluation
processes) draining 20,000 tasks, run from the code before the traces (a
git revision, by default where this branch left main) and from this tree,
alternating on one database (migrated by this tree: the older code runs on
it as well), the table emptied before every round.

    python -m bench.trace_cost [--rounds 5] [--tasks 20000] [--base REV] [--tree REV] [--traced]

Variants: base (the older code), tree (this code, tracing off, tasks
without a trace context: the cost of the claim's two more columns and the
untraced hot path), and with --traced also traced (this code exporting to a
local OTLP/HTTP endpoint that discards what it gets, every task with a
trace context of its own: three spans a task). Prints and writes the
tasks/s of every round and each variant's ratio to base per round (the
machine is noisy: ratios within a round, and their median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

from bench.common import JOB, WORKDIR, database, reset
from tests.support import ROOT, wait_for

INSERT = """
    INSERT INTO tasks (expression, variables, trace_context)
    SELECT %s, jsonb_build_object('x', 10 + g %% 7, 't', 11, 'y', 1),
           CASE WHEN %s THEN '00-' || md5(g::text) || '-' || left(md5('span' || g), 16) || '-01' END
    FROM generate_series(1, %s) g
"""
FINISHED = "SELECT count(*) FROM tasks WHERE status <> 'pending'"


def base_tree(rev: str) -> Path:
    """The code at rev, extracted into a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="calculator-base-", dir=WORKDIR))
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


class DiscardingCollector:
    """An OTLP/HTTP endpoint on 127.0.0.1 that reads each export and answers 200."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start(tree: Path, url: str, log: Path, **env) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "OTEL_"))}
    environ.update(DATABASE_URL=url, PYTHONPATH=str(tree), LOG_LEVEL="WARNING", NUM_PROCESSES="2", **env)
    return subprocess.Popen([sys.executable, "-m", "worker"], cwd=tree, env=environ,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def drain(conn: psycopg.Connection, url: str, tree: Path, count: int, traced: bool, log: Path,
          **env) -> float:
    reset(conn)
    calc = start(tree, url, log, **env)
    try:
        wait_for(lambda: conn.execute("SELECT count(*) FROM calculators").fetchone()[0]
                 or calc.poll() is not None, timeout=60, message="the Calculator to register")
        assert calc.poll() is None, log.read_text()
        conn.execute(INSERT, (JOB, traced, count))
        wait_for(lambda: conn.execute(FINISHED).fetchone()[0] >= count, timeout=600, interval=0.05,
                 message="the round to drain")
        started, ended = conn.execute("SELECT min(created_at), max(finished_at) FROM tasks").fetchone()
        return count / (ended - started).total_seconds()
    finally:
        calc.terminate()
        calc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--base", default=None, help="git revision of the code to compare with")
    parser.add_argument("--tree", default=None,
                        help="a git revision to run as 'tree' instead of this working tree (extracted "
                             "the same way as the base, so that both run from a fresh copy)")
    parser.add_argument("--traced", action="store_true", help="also this code exporting spans")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()
    rev = args.base or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout.strip()
    base = base_tree(rev)
    tree = base_tree(args.tree) if args.tree else ROOT
    collector = DiscardingCollector() if args.traced else None
    variants = {"base": (base, False, {}), "tree": (tree, False, {})}
    if collector:
        variants["traced"] = (tree, True, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with database() as (url, _cluster), psycopg.connect(url, autocommit=True) as conn:
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                tree, traced, env = variants[name]
                rates[name].append(drain(conn, url, tree, args.tasks, traced,
                                         WORKDIR / f"{name}.log", **env))
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}/s" for n in variants),
                  flush=True)
    ratios = {name: [r / b for r, b in zip(rates[name], rates["base"])] for name in variants if name != "base"}
    result = {"base": rev, "tree": args.tree or "the working tree", "tasks": args.tasks, "tasks_per_second": rates,
              "ratio_to_base": {n: {"median": statistics.median(v), "rounds": v} for n, v in ratios.items()}}
    print(json.dumps(result["ratio_to_base"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
