"""A local PostgreSQL server from the binaries tools.pgbinaries chooses.

Used by `make test`, `make run` and `make bench`. Throwaway (the default):
initdb into a temporary directory, removed again at stop(). Kept
(data_dir=...): the data directory survives stop() and is opened again by the
next start(). Either way the server listens on a unix socket in a fresh
temporary directory and on 127.0.0.1:<free port>, so two servers never
collide. PostgreSQL refuses to run as root, so as root the server runs as the
`postgres` system user, or as `calculator-pg` (created once) where there is
none, or as the owner of a kept data directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tools.pgbinaries import (NOT_FOUND, DataVersionMismatch, PostgresError, PostgresNotFound, Server,
                              choose_server)
from tools import pgreach

# The finding part lives in tools.pgbinaries; these names are kept here for callers.
__all__ = ["LocalPostgres", "free_port", "find_bindir", "choose_server", "Server", "NOT_FOUND",
           "PostgresError", "PostgresNotFound", "DataVersionMismatch"]
OWN_USER = "calculator-pg"


def find_bindir() -> Path:
    """The directory of the server binaries that would run."""
    return choose_server().bindir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user(data_dir: Path | None) -> pwd.struct_passwd | None:
    """Who runs the server: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    if data_dir is not None and (data_dir / "PG_VERSION").exists():
        owner = pwd.getpwuid(data_dir.stat().st_uid)
        if owner.pw_uid != 0:
            return owner
    for name in ("postgres", OWN_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    try:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", OWN_USER],
                       check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        output = getattr(error, "output", None) or error
        raise PostgresError(f"PostgreSQL does not run as root, and creating a system user "
                            f"{OWN_USER} for it failed: {str(output).strip()}") from None
    return pwd.getpwnam(OWN_USER)


class LocalPostgres:
    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None,
                 data_dir: Path | None = None, log_file: Path | None = None,
                 server: Server | None = None):
        """durable=False turns off fsync: right for tests and throwaway runs,
        wrong for benchmarks of commit latency and for kept data."""
        self.kept = data_dir is not None
        self._data_dir = Path(data_dir).resolve() if data_dir else None
        self.server = server or choose_server(data_dir=self._data_dir)
        self.bindir = self.server.bindir
        self.durable = durable
        self.settings = dict(settings or {})
        self.port = free_port()
        self.root: Path | None = None  # the run's temporary directory (socket; all of it when throwaway)
        self._log_file = Path(log_file).resolve() if log_file else None
        self.user = _server_user(self._data_dir)
        if self.user:
            self._place_where_the_server_user_reaches()

    def _place_where_the_server_user_reaches(self) -> None:
        """As root: binaries, kept data and log where the server's user can
        reach them, even in a checkout it cannot enter (tools/pgreach.py)."""
        self.bindir = pgreach.reachable_bindir(self.bindir, self.server.version, self.user)
        data = self._data_dir
        if data is not None and not data.exists() and not pgreach.can_reach(self.user, data.parent):
            home = pgreach.home_for(data)
            self._data_dir = pgreach.place_reachable(data, home / "pgdata")
            if self._log_file is not None:
                self._log_file = pgreach.place_reachable(self._log_file, home / "postgres.log")
        elif data is not None and self._log_file is not None and not pgreach.can_reach(
                self.user, self._log_file.parent) and pgreach.can_reach(self.user, data.parent):
            # A data directory kept in a reachable home (a link found and resolved above).
            self._log_file = pgreach.place_reachable(self._log_file, data.parent / "postgres.log")

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def data_dir(self) -> Path:
        return self._data_dir or self.root / "data"

    @property
    def log_file(self) -> Path:
        return self._log_file or self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    @property
    def tcp_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def psql_command(self) -> str:
        command = f"{self.server.program('psql')} -h {self.socket_dir} -p {self.port} -U postgres postgres"
        return f"runuser -u {self.user.pw_name} -- {command}" if self.user else command

    def _run_as_owner(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        return subprocess.run(command, check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def _give_to_owner(self, *paths: Path) -> None:
        if self.user:
            for path in paths:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _check_reachable(self) -> None:
        """As root, the server's user must reach the binaries and the data."""
        if not self.user:
            return
        data_parent = self.data_dir.parent
        probe = subprocess.run(["runuser", "-u", self.user.pw_name, "--", "test", "-x",
                                str(self.bindir / "postgres"), "-a", "-x", str(data_parent)])
        if probe.returncode != 0:
            raise PostgresError(
                f"PostgreSQL runs as the user {self.user.pw_name}, who cannot reach "
                f"{self.bindir} or {data_parent} (a parent directory without o+x, such as "
                f"/root): move the checkout, or chmod o+x its parent directories")

    def start(self) -> "LocalPostgres":
        self.root = Path(tempfile.mkdtemp(prefix="calculator-pg-"))
        try:
            self.socket_dir.mkdir()
            self._give_to_owner(self.root, self.socket_dir)
            self._check_reachable()
            if self._log_file:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self.log_file.touch()
                self._give_to_owner(self.log_file)
            if not (self.data_dir / "PG_VERSION").exists():
                self._init_data_dir()
            else:
                self.stop_leftover()
            self._pg_ctl("start")
        except BaseException:
            self._remove_temporary()
            raise
        return self

    def _init_data_dir(self) -> None:
        data = self.data_dir
        if data.exists() and any(data.iterdir()):
            raise PostgresError(f"{data} is not empty but holds no PostgreSQL database "
                                   "(no PG_VERSION): remove it (make reset) to start afresh")
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._give_to_owner(data)
        try:
            self._run_as_owner("initdb", "-D", str(data), "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        except subprocess.CalledProcessError as error:
            lines = error.output.strip().splitlines()
            raise PostgresError(f"initdb {data} failed: {' | '.join(lines[-3:])}") from None
        options = {
            "listen_addresses": "127.0.0.1",
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            **self.settings,
        }
        with open(data / "postgresql.conf", "a") as conf:
            for key, value in options.items():
                conf.write(f"{key} = '{value}'\n")

    def stop_leftover(self) -> bool:
        """Stop a server left running on a kept data directory by a `make run`
        that was killed (the caller holds the run lock: no other can be ours)."""
        running = self._run_as_owner("pg_ctl", "status", "-D", str(self.data_dir), check=False)
        if running.returncode != 0:
            return False
        try:  # the 5th line: its socket directory, in a temporary directory of that run
            socket_dir = Path((self.data_dir / "postmaster.pid").read_text().splitlines()[4])
        except (OSError, IndexError):
            socket_dir = None
        self._run_as_owner("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60")
        if socket_dir and socket_dir.name == "socket" and socket_dir.parent.name.startswith("calculator-pg-"):
            shutil.rmtree(socket_dir.parent, ignore_errors=True)
        return True

    def _pg_ctl(self, action: str, *extra: str) -> None:
        # Port and socket are the run's own: a kept data directory gets new ones every start.
        options = ["-o", f"-p {self.port} -k {self.socket_dir}"] if action in ("start", "restart") else []
        try:
            self._run_as_owner("pg_ctl", action, "-D", str(self.data_dir), "-w", "-t", "60",
                               "-l", str(self.log_file), *options, *extra)
        except subprocess.CalledProcessError as error:
            if action == "stop":
                raise
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-5:] \
                if self.log_file.exists() else []
            raise PostgresError(f"pg_ctl {action} failed ({error.output.strip()}); "
                                   f"the end of {self.log_file}: " + " | ".join(tail)) from None

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
            # A kept database shuts down cleanly; a throwaway one is removed anyway.
            self._pg_ctl("stop", "-m", "fast" if self.kept else "immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
