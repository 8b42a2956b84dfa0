"""A PgBouncer of our own in transaction mode (Debian's package `pgbouncer`),
in front of a PostgreSQL, for the tests and the benchmarks.

    with PgBouncer(server_url, user="calculator_api_login") as bouncer:
        bouncer.url   # what the API processes use as DATABASE_URL

It logs in to PostgreSQL as `user`, whose role settings (ALTER ROLE ... SET,
see API_ROLE_SETTINGS) give every server connection the API's session
settings: in transaction mode what a client SETs lands on whichever server
connection served it, so the settings must be the pool's. (Not PgBouncer's
connect_query: 1.18 passed its results on to the client waiting for the
connection, a protocol error.) Clients log in without a password (auth_type
any): it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from tools.pgcluster import _server_user, free_port

# The API's session settings (api/db.py sets the same on a direct connection).
# What api/db.py sets on each pooled connection, as role settings of the
# login PgBouncer uses (statement_timeout: DB_TIMEOUT's default).
API_ROLE_SETTINGS = ("ALTER ROLE {role} SET statement_timeout = '5s'",
                     "ALTER ROLE {role} SET calculator.notify_after_commit = on")


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if not found:
        raise SystemExit("PgBouncer is needed: apt-get install -y pgbouncer")
    return found


def version() -> tuple[int, ...]:
    output = subprocess.run([find_pgbouncer(), "--version"], capture_output=True, text=True).stdout
    words = output.split()
    return tuple(int(p) for p in words[1].split(".")[:2]) if len(words) > 1 else (0,)


class PgBouncer:
    def __init__(self, server_url: str, *, user: str, pool_size: int = 8, max_clients: int = 500):
        self.server = conninfo_to_dict(server_url)
        self.user, self.pool_size, self.max_clients = user, pool_size, max_clients
        self.port = free_port()
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/calculator"

    def _config(self) -> str:
        host = self.server.get("host", "127.0.0.1")
        target = (f"host={host} port={self.server.get('port', 5432)} "
                  f"dbname={self.server.get('dbname', 'postgres')} user={self.user}")
        return "\n".join([
            "[databases]",
            f"calculator = {target}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = any",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "min_pool_size = 0",
            f"max_client_conn = {self.max_clients}",
            "server_reset_query =",
            "ignore_startup_parameters = extra_float_digits",
            f"logfile = {self.root / 'pgbouncer.log'}",
            f"pidfile = {self.root / 'pgbouncer.pid'}",
            "",
        ])

    def start(self) -> "PgBouncer":
        self.root = Path(tempfile.mkdtemp(prefix="calculator-pgbouncer-"))
        config = self.root / "pgbouncer.ini"
        config.write_text(self._config())
        command = [find_pgbouncer(), str(config)]
        owner = _server_user(None)  # PgBouncer does not run as root
        if owner:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            os.chown(config, owner.pw_uid, owner.pw_gid)
            command = ["runuser", "-u", owner.pw_name, "--", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.log()
                    self.stop()
                    raise RuntimeError(f"PgBouncer did not start:\n{log}")
                time.sleep(0.02)

    def log(self) -> str:
        path = self.root / "pgbouncer.log" if self.root else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # runuser passes it on
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "PgBouncer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
