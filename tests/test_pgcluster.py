"""A kept data directory that cannot be served is refused with a message
before anything touches it (the binaries are the real ones chosen here)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from tools.pgcluster import DataVersionMismatch, LocalPostgres, PostgresError


@pytest.fixture
def reachable_dir():
    """A directory PostgreSQL's user can reach when we are root."""
    path = Path(tempfile.mkdtemp(prefix="calculator-kept-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_data_directory_of_an_unknown_major_version_is_left_alone(reachable_dir):
    data = reachable_dir / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text("9\n")
    with pytest.raises(DataVersionMismatch, match="holds a PostgreSQL 9 database.*make reset"):
        LocalPostgres(data_dir=data)
    assert sorted(p.name for p in data.iterdir()) == ["PG_VERSION"]


def test_a_directory_that_is_not_a_database_is_not_initialised_over(reachable_dir):
    data = reachable_dir / "pgdata"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    with pytest.raises(PostgresError, match="not empty but holds no PostgreSQL database"):
        LocalPostgres(data_dir=data).start()
    assert (data / "notes.txt").read_text() == "mine"


def test_as_root_a_checkout_the_server_user_cannot_enter_just_works(tmp_path, reachable_dir, monkeypatch):
    """The checkout in a directory other users cannot enter (/root/app): the
    embedded binaries in its .venv (make test on a fresh machine) and make
    run's kept data and log in its .run are placed where PostgreSQL's user
    reaches them (tools/pgreach.py); the data is found again through the
    checkout's link, and make reset removes both. Before, it stopped with
    "PostgreSQL runs as the user postgres, who cannot reach ..."."""
    from tools import pgreach
    from tools.pgbinaries import choose_server
    from tools.pgcluster import Server
    from tools.run_local import reset
    monkeypatch.setattr(pgreach, "PG_HOME_ROOT", reachable_dir / "homes")
    app = tmp_path / "app"
    app.mkdir(mode=0o700)  # pytest's tmp_path is private to its user too
    server = choose_server()
    if server.kind == "embedded":  # as a fresh checkout's .venv holds it (with its bundled libraries)
        package = server.bindir.parent.parent
        shutil.copytree(package, app / "site" / package.name, symlinks=True)
        shutil.copytree(package.with_name(package.name + ".libs"), app / "site" / (package.name + ".libs"))
        server = Server(app / "site" / package.name / "pginstall" / "bin", "embedded")
    with LocalPostgres(server=server) as throwaway:  # make test's server
        with psycopg.connect(throwaway.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    run_dir = app / ".run"
    kept = dict(data_dir=run_dir / "pgdata", log_file=run_dir / "logs" / "postgres.log", server=server)
    with LocalPostgres(**kept) as first:  # make run's server, twice
        with psycopg.connect(first.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
    with LocalPostgres(**kept) as second:
        with psycopg.connect(second.url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    if os.geteuid() == 0 and not pgreach.can_reach(second.user, app):
        assert (run_dir / "pgdata").is_symlink() and (run_dir / "logs" / "postgres.log").is_symlink()
        assert "database system is ready" in (run_dir / "logs" / "postgres.log").read_text()
        home = (run_dir / "pgdata").resolve().parent
        assert home.parent == reachable_dir / "homes"
        if server.kind == "embedded":
            assert not second.bindir.is_relative_to(app), "the binaries were used from a reachable copy"
    assert reset(run_dir) == 0
    assert not (run_dir / "pgdata").exists() and not (run_dir / "pgdata").is_symlink()
    assert not any((reachable_dir / "homes").iterdir()) if (reachable_dir / "homes").exists() else True
