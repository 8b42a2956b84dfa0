"""A kept data directory that cannot be served is refused with a message
before anything touches it (the binaries are the real ones chosen here)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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


def test_as_root_a_data_directory_the_server_user_cannot_reach_is_explained(tmp_path):
    private = tmp_path / "private"  # pytest's tmp_path is private to its user
    private.mkdir(mode=0o700)
    cluster = LocalPostgres(data_dir=private / "pgdata")
    if os.geteuid() != 0:
        assert cluster.user is None  # we run it ourselves: nothing to reach
        return
    with pytest.raises(PostgresError, match=f"PostgreSQL runs as the user {cluster.user.pw_name}, "
                                            "who cannot reach"):
        cluster.start()
    assert not (private / "pgdata").exists() and cluster.root is None
