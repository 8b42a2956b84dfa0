"""`make run`: the whole service on this machine, no Docker.

Starts a throwaway PostgreSQL (unless DATABASE_URL is set), applies the
migrations, starts the API (gunicorn) on PORT and CALCULATORS Calculators,
prints where everything is, and stops all of it on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from core.migrations import apply_migrations
from tools.pgcluster import LocalPostgres, PostgresNotFound

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("RUN_DIR") or ROOT / ".run")  # lock file and logs


class RunError(RuntimeError):
    pass


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _take_run_lock():
    RUN_DIR.mkdir(exist_ok=True)
    lock = open(RUN_DIR / "run.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        other = lock.read().strip() or "?"
        raise RunError(f"`make run` is already running here (pid {other}): stop it with Ctrl-C first")
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


class LocalRun:
    def __init__(self, environ=os.environ):
        self.environ = dict(environ)
        self.port = int(self.environ.get("PORT", "5000"))
        self.host = self.environ.get("HOST", "127.0.0.1")
        self.count = int(self.environ.get("CALCULATORS", "2"))
        self.cluster: LocalPostgres | None = None
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False

    def start(self) -> None:
        if not _port_is_free(self.host, self.port):
            raise RunError(f"port {self.port} is in use: stop what uses it or set PORT=...")
        url = self.environ.get("DATABASE_URL")
        if not url:
            self.cluster = LocalPostgres().start()
            url = self.cluster.url
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            apply_migrations(conn)
        env = dict(self.environ, DATABASE_URL=url, PYTHONPATH=str(ROOT), PORT=str(self.port),
                   HOST=self.host)
        logs = RUN_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._spawn("api", [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"],
                    env, logs / "api.log")
        for number in range(1, self.count + 1):
            self._spawn(f"calculator-{number}", [sys.executable, "-m", "worker"], env,
                        logs / f"calculator-{number}.log")
        self._wait_for_api()
        self._print_banner(url, logs)

    def _spawn(self, name: str, command: list[str], env: dict, log_path: Path) -> None:
        log = open(log_path, "ab")
        # Own process group: Ctrl-C reaches us only, and we stop them in order.
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.children.append((name, process))

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_children()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RunError(f"the API did not become ready in 30 s: see {RUN_DIR / 'logs' / 'api.log'}")

    def _check_children(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise RunError(f"{name} exited with code {process.returncode}: see "
                               f"{RUN_DIR / 'logs' / (name + '.log')}")

    def _print_banner(self, url: str, logs: Path) -> None:
        psql = (f"psql -h {self.cluster.socket_dir} -p {self.cluster.port} -U postgres postgres"
                if self.cluster else f"psql '{url}'")
        if self.cluster and os.geteuid() == 0:
            psql = "runuser -u postgres -- " + psql
        print(f"""
calculator-service is running
  API          http://{self.host}:{self.port}   (try: curl -s -X POST {self.host}:{self.port}/api/expression -H 'Content-Type: application/json' -d '{{"expression": "2+2"}}')
  Calculators  {self.count}
  database     {psql}
  logs         {logs}/ (api.log, calculator-N.log){f'; postgres: {self.cluster.log_file}' if self.cluster else ''}
Ctrl-C stops everything.
""", flush=True)

    def watch(self) -> None:
        while not self.stopping:
            self._check_children()
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping = True
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.children:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in 20 s; killing it", file=sys.stderr)
                process.kill()
        if self.cluster:
            self.cluster.stop()


def main() -> int:
    run = LocalRun()

    def on_signal(signum, frame):
        run.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        run.lock = _take_run_lock()  # held until this process exits
        run.start()
        run.watch()
        print("stopping...", flush=True)
        return 0
    except (RunError, PostgresNotFound) as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as error:
        print(f"make run: cannot reach the database: {str(error).strip()}", file=sys.stderr)
        return 1
    finally:
        run.stop()


if __name__ == "__main__":
    sys.exit(main())
