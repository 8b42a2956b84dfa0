"""The HTTP server compared by measurement: the same Flask app under
gunicorn gthread, gunicorn gevent and granian (WSGI), side by side, with wrk.

    python -m bench.servers                        # every server, every scenario
    BENCH_SERVERS=gunicorn-gevent python -m bench.servers

Scenarios, on one database (no Calculator runs, so every task stays pending),
each on every server in turn, BENCH_RUNS rounds (default 2), medians:
  throughput  wrk, 4 connections, BENCH_LOAD_SECONDS each: /healthz, POST, GET
  waiters     1,000 connections wait on a pending id (?wait=30, wrk) while
              4 more measure /healthz, POST and GET of other ids
  slowloris   50 connections trickle request headers (a line a second)
              while 4 more measure /healthz
  rss         resident memory of the server's processes after all of it
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import psycopg

from bench.common import WORKDIR, database
from bench.http_load import SUBMISSION, load, pgbench_insert_tps, wrk_start
from tests.http_client import answers
from tests.support import ROOT, wait_for
from tools.pgcluster import free_port

SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "5"))
WAITERS = int(os.environ.get("BENCH_WAITERS", "1000"))
SLOW_CLIENTS = 50
ROUNDS = int(os.environ.get("BENCH_RUNS", "2"))


def _commands(port: int) -> dict[str, tuple[list[str], dict]]:
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"]
    granian = [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "2", "--no-ws", "--log-level", "warning",
               "api.wsgi:app"]
    return {
        "gunicorn-gthread": (gunicorn, {"API_WORKER_CLASS": "gthread"}),
        # api/gunicorn_worker.py: gevent with fair turns and JSON errors (the default)
        "gunicorn-gevent": (gunicorn, {"API_WORKER_CLASS": "gevent"}),
        "gunicorn-gevent-plain": (gunicorn, {"API_WORKER_CLASS": "gevent-plain"}),
        "granian": (granian + ["--blocking-threads", "8"], {}),
        # granian holds a waiting request on a blocking thread: enough of them
        # for 1,000 waiters across 2 workers.
        "granian-512-threads": (granian + ["--blocking-threads", "512"], {}),
    }


NAMES = list(_commands(0))


@contextmanager
def server(name: str, url: str, **env):
    port = free_port()
    command, extra = _commands(port)[name]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    environ.update(DATABASE_URL=url, BIND=f"127.0.0.1:{port}", PYTHONPATH=str(ROOT),
                   LOG_LEVEL="WARNING", **extra, **env)
    log = open(WORKDIR / f"{name}-{port}.log", "ab")
    process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base) or process.poll() is not None, timeout=30, interval=0.05,
                 message=name)
        assert process.poll() is None, (WORKDIR / f"{name}-{port}.log").read_text()
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()



def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (the server's workers)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in open(f"/proc/{current}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in os.listdir(f"/proc/{current}/task"):
                pids += [int(p) for p in open(f"/proc/{current}/task/{task}/children").read().split()]
        except FileNotFoundError:
            continue
    return round(total / 1024, 1)


def _pending_task(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks RESTART IDENTITY")
        conn.execute("INSERT INTO tasks (expression) SELECT '1+1' FROM generate_series(1, 1000)")
        return conn.execute("INSERT INTO tasks (expression) VALUES ('2+2') RETURNING id").fetchone()[0]


def _mixed(base: str, seconds: float) -> dict:
    gets = [f"/api/result/{i}" for i in range(1, 1001)]
    return {
        "healthz": load(base, "GET", ["/healthz"], None, 4, seconds),
        "post": load(base, "POST", ["/api/expression"], SUBMISSION, 4, seconds),
        "get": load(base, "GET", gets, None, 4, seconds),
    }


def throughput(base: str, url: str) -> dict:
    _pending_task(url)
    return _mixed(base, SECONDS)


def waiters(base: str, url: str) -> dict:
    task_id = _pending_task(url)
    crowd = wrk_start(base, [f"/api/result/{task_id}?wait=30"], WAITERS, SECONDS * 3 + 4, timeout=60)
    try:
        time.sleep(3)  # let the crowd connect and start waiting
        figures = _mixed(base, SECONDS)
    finally:
        output = crowd.communicate()[0]
        # Release what the server still holds (a thread per waiter, for some).
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE tasks SET status = 'done', result = '4', finished_at = now() WHERE id = %s",
                         (task_id,))
            conn.execute("SELECT pg_notify('results_stored', %s)", (str(task_id),))
    figures["crowd_answered"] = _answered(output)
    return figures


def _answered(wrk_output: str) -> str:
    for line in wrk_output.splitlines():
        if "requests in" in line:
            return line.strip()
    return wrk_output.strip()[-200:]


def slowloris(base: str, url: str) -> dict:
    _pending_task(url)
    host, port = base.rsplit("/", 1)[1].split(":")
    stop = threading.Event()
    sockets = []
    for _ in range(SLOW_CLIENTS):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)

    def trickle():
        n = 0
        while not stop.wait(1):
            n += 1
            for s in sockets:
                try:
                    s.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                except OSError:
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        figures = {"healthz": load(base, "GET", ["/healthz"], None, 4, SECONDS)}
    finally:
        stop.set()
        thread.join()
        for s in sockets:
            s.close()
    return figures


def compare(url: str, names: list[str], rounds: int) -> dict:
    """Every server started at once; then, round after round, each scenario on
    each server in turn, so that the machine's changing load spreads over all
    of them. Each figure is the median of the rounds."""
    runs: dict = {name: {} for name in names}
    with contextlib.ExitStack() as stack:
        started = {name: stack.enter_context(server(name, url)) for name in names}
        rss_idle = {name: rss_mib(process.pid) for name, (_, process) in started.items()}
        for round_number in range(rounds):
            for scenario in (throughput, waiters, slowloris):
                for name, (base, _) in started.items():
                    figures = scenario(base, url)
                    runs[name].setdefault(scenario.__name__, []).append(figures)
                    print(f"  round {round_number + 1} {scenario.__name__} {name}: "
                          f"{json.dumps(figures)[:300]}", flush=True)
        rss_after = {name: rss_mib(process.pid) for name, (_, process) in started.items()}
    return {name: {"rss_idle_mib": rss_idle[name], "rss_after_mib": rss_after[name],
                   **{scenario: _median_figures(values) for scenario, values in runs[name].items()}}
            for name in names}


def _median_figures(values: list[dict]) -> dict:
    merged = {}
    for request_name, first in values[0].items():
        if not isinstance(first, dict):
            merged[request_name] = [v[request_name] for v in values]
            continue
        merged[request_name] = {
            key: statistics.median(v[request_name].get(key, 0) for v in values)
            for key in ("requests_per_second", "p50_ms", "p99_ms")}
        merged[request_name]["runs"] = [v[request_name] for v in values]
    return merged


def report(results: dict) -> None:
    pgbench = [results.get("pgbench_insert_tps_before"), results.get("pgbench_insert_tps_after")]
    pgbench = [v for v in pgbench if v]
    tps = sum(pgbench) / len(pgbench) if pgbench else None
    if tps:
        print(f"\npgbench single-row INSERT, 4 clients: {' / '.join(f'{v:,.0f}' for v in pgbench)} TPS "
              f"(before / after the servers)")
    print(f"\n{'server':24} {'scenario':10} {'request':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs pgbench':>10}")
    for name, figures in results["servers"].items():
        for scenario in ("throughput", "waiters", "slowloris"):
            for request_name, v in figures[scenario].items():
                if not isinstance(v, dict):
                    continue
                rate = v.get("requests_per_second", 0)
                ratio = f"{rate / tps:.2f}x" if tps and scenario == "throughput" else ""
                if rate == 0:
                    print(f"{name:24} {scenario:10} {request_name:8} no answer within wrk's 2 s timeout")
                    continue
                print(f"{name:24} {scenario:10} {request_name:8} {rate:8,.0f} {v.get('p50_ms', 0):8.2f} "
                      f"{v.get('p99_ms', 0):8.2f} {ratio:>10}")
        print(f"{name:24} RSS {figures['rss_idle_mib']} MiB idle, {figures['rss_after_mib']} MiB after; "
              f"crowd: {figures['waiters'].get('crowd_answered')}")


def main() -> int:
    names = os.environ.get("BENCH_SERVERS", ",".join(NAMES)).split(",")
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": SECONDS}
    with database() as (url, cluster):
        # The database's own rate for the same work, before and after the servers.
        if cluster:
            results["pgbench_insert_tps_before"] = pgbench_insert_tps(cluster, 4, max(2, int(SECONDS)))
        results["servers"] = compare(url, names, ROUNDS)
        if cluster:
            results["pgbench_insert_tps_after"] = pgbench_insert_tps(cluster, 4, max(2, int(SECONDS)))
    report(results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = ROOT / "bench" / "results" / f"servers-{stamp}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
