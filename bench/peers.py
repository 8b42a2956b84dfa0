"""make bench-peers: the same job on PgQueuer and procrastinate, and on ours,
in one invocation, on one database.

The job: parse and evaluate x*t**y + sin(x) with py_expression_eval and store
the number with the time it was stored. PgQueuer (asyncpg driver, batch 10)
and procrastinate (concurrency 10) each run in one worker process; their
packages live in bench/.venv-peers only, never in the service's dependencies.

    python -m bench.peers                # what make bench-peers runs
    python -m bench.peers worker NAME    # one peer's worker (started by the above)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

import psycopg

from bench.common import JOB, JOB_VARIABLES, WORKDIR, database, percentiles, summary
from bench.latency import paced
from tests.support import ROOT, wait_for

RESULTS_TABLE = """
    CREATE TABLE IF NOT EXISTS peer_results (
        job_id bigint, result double precision,
        enqueued_at timestamptz, finished_at timestamptz DEFAULT clock_timestamp())
"""
STORE = "INSERT INTO peer_results (job_id, result, enqueued_at) VALUES (%s, %s, to_timestamp(%s))"


def evaluate(expression: str, variables: dict) -> float:
    from py_expression_eval import Parser
    return Parser().parse(expression).evaluate(variables)


# --- the workers (each in its own process) ----------------------------------

def pgqueuer_worker(dsn: str) -> None:
    import asyncpg
    from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
    from pgqueuer.adapters.persistence.queries import Queries
    from pgqueuer.core.qm import QueueManager

    async def main():
        connection = await asyncpg.connect(dsn)
        store = await asyncpg.create_pool(dsn, min_size=10, max_size=10)  # jobs of a batch run concurrently
        manager = QueueManager(Queries(AsyncpgDriver(connection)))

        @manager.entrypoint("calculate")
        async def calculate(job) -> None:
            payload = json.loads(job.payload)
            result = evaluate(payload["expression"], payload["variables"])
            await store.execute(
                "INSERT INTO peer_results (job_id, result, enqueued_at) VALUES ($1, $2, to_timestamp($3))",
                job.id, result, payload["enqueued_at"])

        open(os.environ["PEER_READY_FILE"], "w").close()
        await manager.run(batch_size=10)

    asyncio.run(main())


def procrastinate_app(dsn: str):
    import procrastinate
    from psycopg_pool import ConnectionPool
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    store = {}

    @app.task(name="calculate")
    def calculate(expression, variables, enqueued_at):
        result = evaluate(expression, variables)
        if "pool" not in store:  # one pool for the worker's threads, made in the worker
            store["pool"] = ConnectionPool(dsn, min_size=10, max_size=10, kwargs={"autocommit": True})
        with store["pool"].connection() as conn:
            conn.execute(STORE, (0, result, enqueued_at))

    return app, calculate


def procrastinate_worker(dsn: str) -> None:
    app, _ = procrastinate_app(dsn)
    open(os.environ["PEER_READY_FILE"], "w").close()
    app.run_worker(concurrency=10, install_signal_handlers=True)


# --- enqueueing ---------------------------------------------------------------

class Peer:
    name = ""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def start_worker(self) -> subprocess.Popen:
        ready = WORKDIR / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PEER_READY_FILE=str(ready))
        log = open(WORKDIR / f"{self.name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "bench.peers", "worker", self.name, self.dsn],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: ready.exists() or process.poll() is not None, timeout=60, message=self.name)
        assert process.poll() is None, (WORKDIR / f"{self.name}.log").read_text()[-2000:]
        time.sleep(0.5)  # let it reach its LISTEN / first poll
        return process


class PgQueuer(Peer):
    name = "pgqueuer"

    def install(self) -> None:
        async def main():
            import asyncpg
            from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
            from pgqueuer.adapters.persistence.queries import Queries
            connection = await asyncpg.connect(self.dsn)
            queries = Queries(AsyncpgDriver(connection))
            try:
                await queries.install()
            except Exception as error:  # already installed
                print(f"  pgqueuer install: {error.__class__.__name__}", flush=True)
            await connection.close()
        asyncio.run(main())

    def enqueue(self, payloads: list[dict]) -> None:
        async def main():
            import asyncpg
            from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
            from pgqueuer.adapters.persistence.queries import Queries
            connection = await asyncpg.connect(self.dsn)
            queries = Queries(AsyncpgDriver(connection))
            await queries.enqueue(["calculate"] * len(payloads),
                                  [json.dumps(p).encode() for p in payloads], [0] * len(payloads))
            await connection.close()
        asyncio.run(main())

    def enqueue_paced(self, rate: float, seconds: float) -> None:
        async def main():
            import asyncpg
            from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
            from pgqueuer.adapters.persistence.queries import Queries
            connection = await asyncpg.connect(self.dsn)
            queries = Queries(AsyncpgDriver(connection))
            for _ in paced(rate, seconds):
                payload = dict(expression=JOB, variables=JOB_VARIABLES, enqueued_at=time.time())
                await queries.enqueue("calculate", json.dumps(payload).encode())
            await connection.close()
        asyncio.run(main())


class Procrastinate(Peer):
    name = "procrastinate"

    def install(self) -> None:
        app, _ = procrastinate_app(self.dsn)
        with app.open():
            try:
                app.schema_manager.apply_schema()
            except Exception as error:  # already installed
                print(f"  procrastinate schema: {error.__class__.__name__}", flush=True)

    def enqueue(self, payloads: list[dict]) -> None:
        app, task = procrastinate_app(self.dsn)
        with app.open():
            for start in range(0, len(payloads), 1000):
                task.batch_defer(*payloads[start:start + 1000])

    def enqueue_paced(self, rate: float, seconds: float) -> None:
        app, task = procrastinate_app(self.dsn)
        with app.open():
            for _ in paced(rate, seconds):
                task.defer(expression=JOB, variables=JOB_VARIABLES, enqueued_at=time.time())


# --- the scenarios --------------------------------------------------------------

def peer_throughput(peer: Peer, conn: psycopg.Connection, count: int) -> float:
    conn.execute("TRUNCATE peer_results")
    worker = peer.start_worker()
    try:
        enqueued_at = time.time()
        peer.enqueue([dict(expression=JOB, variables=dict(JOB_VARIABLES, x=10 + n % 7),
                           enqueued_at=enqueued_at) for n in range(count)])
        wait_for(lambda: conn.execute("SELECT count(*) FROM peer_results").fetchone()[0] >= count,
                 timeout=900, interval=0.05, message=f"{peer.name} to drain")
    finally:
        worker.terminate()
        worker.wait(30)
    first, last = conn.execute("SELECT min(enqueued_at), max(finished_at) FROM peer_results").fetchone()
    return count / (last - first).total_seconds()


def peer_latency(peer: Peer, conn: psycopg.Connection, rate: float, seconds: float) -> dict:
    conn.execute("TRUNCATE peer_results")
    worker = peer.start_worker()
    try:
        peer.enqueue_paced(rate, seconds)
        expected = int(rate * seconds)
        wait_for(lambda: conn.execute("SELECT count(*) FROM peer_results").fetchone()[0] >= expected,
                 timeout=60, message=f"{peer.name} latency jobs")
    finally:
        worker.terminate()
        worker.wait(30)
    rows = conn.execute("SELECT extract(epoch FROM finished_at - enqueued_at) * 1000 FROM peer_results")
    return percentiles([float(r[0]) for r in rows])


def main() -> int:
    from bench import latency, throughput
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    count = int(os.environ.get("BENCH_TASKS", "20000"))
    seconds = float(os.environ.get("BENCH_LATENCY_SECONDS", "20"))
    figures: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": runs, "tasks": count}
    with database() as (url, cluster):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RESULTS_TABLE)
            peers = [PgQueuer(url), Procrastinate(url)]
            for peer in peers:
                peer.install()
            for name, measure in [
                ("ours: 1 Calculator", lambda: throughput.calculators_throughput(url, conn, count, 1, False)),
                ("raw loop, evaluating", lambda: throughput.raw_loop_throughput(conn, count, True)),
                *[(f"{p.name}", lambda p=p: peer_throughput(p, conn, count)) for p in peers],
            ]:
                values = []
                for run in range(runs):
                    values.append(measure())
                    print(f"  throughput {name} run {run + 1}: {values[-1]:,.0f} tasks/s", flush=True)
                figures.setdefault("throughput", {})[name] = summary(values)
            for name, measure in [
                ("ours: SQL insert", lambda: latency.sql_latency(url, conn, 50, seconds)),
                *[(f"{p.name}", lambda p=p: peer_latency(p, conn, 50, seconds)) for p in peers],
            ]:
                values = []
                for run in range(runs):
                    values.append(measure())
                    print(f"  latency {name} run {run + 1}: {values[-1]}", flush=True)
                figures.setdefault("latency", {})[name] = values
    print()
    ours = figures["throughput"]["ours: 1 Calculator"]["median"]
    print(f"{'throughput (tasks/s)':28} {'median':>8} {'min':>8} {'max':>8} {'ours is':>9}")
    for name, s in figures["throughput"].items():
        print(f"{name:28} {s['median']:8,.0f} {s['min']:8,.0f} {s['max']:8,.0f} {ours / s['median']:8.1f}x")
    print(f"\n{'latency at 50/s (ms)':28} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for name, values in figures["latency"].items():
        cells = [statistics.median(v[k] for v in values) for k in ("p50", "p90", "p99", "max")]
        print(f"{name:28} " + " ".join(f"{c:8.2f}" for c in cells))
    path = ROOT / "bench" / "results" / time.strftime("peers-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nfigures written to {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "worker":
        {"pgqueuer": pgqueuer_worker, "procrastinate": procrastinate_worker}[sys.argv[2]](sys.argv[3])
    else:
        sys.exit(main())
