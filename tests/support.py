"""Helpers shared by the tests and the chaos run: polling with a deadline,
queue look-ups, and real Calculator processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition"):
    """Poll until predicate() is truthy; return its value or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def outcome(conn: psycopg.Connection, task_id: int):
    return conn.execute("SELECT status, result, error FROM tasks WHERE id = %s", (task_id,)).fetchone()


def wait_done(conn: psycopg.Connection, task_ids, timeout: float = 20.0):
    """Wait until none of task_ids is pending; return {id: (status, result, error)},
    the result with its sign (sql/016: signed_result)."""
    ids = list(task_ids)
    wait_for(lambda: conn.execute(
        "SELECT count(*) = 0 FROM tasks WHERE id = ANY(%s) AND status = 'pending'", (ids,)
    ).fetchone()[0], timeout, message=f"tasks {ids[:10]} to finish")
    rows = conn.execute("SELECT id, status, signed_result(result, result_negative_zero), error "
                        "FROM tasks WHERE id = ANY(%s)", (ids,))
    return {r[0]: r[1:] for r in rows}


def insert(conn: psycopg.Connection, expression: str, variables: str = "{}") -> int:
    return conn.execute("INSERT INTO tasks (expression, variables) VALUES (%s, %s) RETURNING id",
                        (expression, variables)).fetchone()[0]


class CalculatorProcess:
    """A real `python -m worker` process with its own settings."""

    def __init__(self, database_url: str, log_path: Path, **settings):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(DATABASE_URL=database_url, PYTHONPATH=str(ROOT), LOG_LEVEL="INFO")
        env.update({k.upper(): str(v) for k, v in settings.items()})
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 20.0) -> None:
        wait_for(lambda: "calculator started" in self.log() or self.process.poll() is not None,
                 timeout, message="the calculator to start")
        assert self.process.poll() is None, self.log()

    def evaluator_pids(self) -> list[int]:
        """The evaluation processes: the children that are forks of the worker."""
        pids = []
        for pid in map(int, Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == \
                        Path(f"/proc/{self.pid}/cmdline").read_bytes():
                    pids.append(pid)
            except FileNotFoundError:
                continue
        return pids

    def busy_evaluator_pids(self, cpu_seconds: float = 0.05) -> list[int]:
        """Evaluation processes calculating now: on the CPU (state R) and with
        cpu_seconds of CPU behind them, which a child that is only starting
        up, or answering, does not have."""
        busy = []
        ticks = os.sysconf("SC_CLK_TCK")
        for pid in self.evaluator_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            state, utime, stime = fields[0], int(fields[11]), int(fields[12])
            if state == "R" and (utime + stime) / ticks >= cpu_seconds:
                busy.append(pid)
        return busy

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class Calculators:
    """Starts Calculator processes (call it with settings) and kills what is
    left of them at close()."""

    def __init__(self, url: str, log_dir: Path):
        self.url, self.log_dir, self.started = url, log_dir, []

    def __call__(self, url: str | None = None, wait: bool = True, **settings) -> CalculatorProcess:
        calc = CalculatorProcess(url or self.url, self.log_dir / f"calculator-{len(self.started)}.log",
                                 **settings)
        self.started.append(calc)
        if wait:
            calc.wait_started()
        return calc

    def close(self) -> None:
        for calc in self.started:
            if calc.process.poll() is None:
                calc.kill()
            calc._log.close()


def run_in_threads(target: Callable[[], None], count: int) -> None:
    """Run target in count threads at once and wait for all of them."""
    import threading
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class ApiServer:
    """The API under gunicorn with api/gunicorn.conf.py (the production
    server and its defaults) on a free port, as a real process."""

    def __init__(self, database_url: str, log_path: Path, **settings):
        from tools.pgcluster import free_port
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(DATABASE_URL=database_url, PYTHONPATH=str(ROOT), BIND=f"127.0.0.1:{self.port}")
        env.update({k.upper(): str(v) for k, v in settings.items()})
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"],
                                        cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout=30, interval=0.05, message="gunicorn to answer")

    def _answers(self) -> bool:
        from tests.http_client import answers
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.log_path.read_text()}")
        return answers(self.base)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            self._log.close()


def write_tenant_usage(conn: psycopg.Connection, usage: dict, heartbeat_age: float = 0.0) -> None:
    """A Calculator's row with its per-tenant figures (calculators.tenant_usage,
    sql/017_fair_share_of_time.sql), as a Calculator writes it, whose last
    heartbeat was heartbeat_age seconds ago (15 or more: not live)."""
    import json
    import uuid
    conn.execute("INSERT INTO calculators (id, hostname, pid, heartbeat_at, tenant_usage) "
                 "VALUES (%s, 'test-host', %s, now() - make_interval(secs => %s), %s)",
                 (uuid.uuid4(), 90000 + conn.execute("SELECT count(*) FROM calculators").fetchone()[0],
                  heartbeat_age, json.dumps(usage)))
