"""A throwaway PostgreSQL server from the installed server binaries.

Used by `make test`, `make run` and `make bench`: initdb into a temporary
directory, a server on a unix socket there and on 127.0.0.1:<free port>,
removed again at stop(). PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` system user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

NOT_FOUND = ("PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
             "(Debian: apt-get install postgresql) or set DATABASE_URL to a server")


class PostgresNotFound(RuntimeError):
    pass


def find_bindir() -> Path:
    """PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin, else PATH."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                  reverse=True)
    candidates += [Path(p) for p in versions]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise PostgresNotFound(NOT_FOUND)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None):
        """durable=False turns off fsync: right for tests and throwaway runs,
        wrong for benchmarks of commit latency."""
        self.bindir = find_bindir()
        self.durable = durable
        self.settings = dict(settings or {})
        self.port = free_port()
        self.root: Path | None = None

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    @property
    def tcp_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as_owner(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, **kwargs)

    def start(self) -> "LocalPostgres":
        self.root = Path(tempfile.mkdtemp(prefix="calculator-pg-"))
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run_as_owner("initdb", "-D", str(self.data_dir), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            **self.settings,
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            for key, value in options.items():
                conf.write(f"{key} = '{value}'\n")
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run_as_owner("pg_ctl", action, "-D", str(self.data_dir), "-w", "-t", "60",
                           "-l", str(self.log_file), *extra)

    def stop_server(self) -> None:
        """Stop the server but keep its data (to test outages)."""
        self._pg_ctl("stop", "-m", "fast")

    def start_server(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
