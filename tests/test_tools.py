"""make run / make test helpers that do not need a server."""

from __future__ import annotations

import pytest

from tools import pgcluster


def test_missing_server_binaries_are_one_clear_sentence(monkeypatch):
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.setattr(pgcluster.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pgcluster.shutil, "which", lambda name: None)
    with pytest.raises(pgcluster.PostgresNotFound) as missing:
        pgcluster.find_bindir()
    message = str(missing.value)
    assert "\n" not in message
    assert "apt-get install postgresql" in message and "DATABASE_URL" in message


def test_pg_bindir_wins(monkeypatch, tmp_path):
    for name in ("initdb", "pg_ctl"):
        (tmp_path / name).touch()
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    assert pgcluster.find_bindir() == tmp_path


def test_an_error_is_summed_up_in_one_line_even_when_it_says_nothing():
    from core.database import error_summary
    assert error_summary(OSError("connection refused\n\tIs the server running?")) == "connection refused"
    assert error_summary(OSError("")) == "OSError"
