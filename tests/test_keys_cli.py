"""The keys command as the README shows it: beside `make run` it
finds make run's database by itself (`python -m api.keys create alice`, or
`make key NAME=alice`), and key names follow one rule: compared without case,
when a key is created and when one is revoked."""

from __future__ import annotations

import os
import subprocess
import sys

from api.keys import parse_key
from tests.http_client import request
from tests.support import ROOT
from tests.test_auth import bearer, run_keys
from tests.test_run_local import Run, run_dir  # noqa: F401  (fixture)
from tools.pgcluster import free_port


def without_database_settings(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("PG") and k not in ("PG", "PG_BINDIR")) and k != "DATABASE_URL"}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def test_beside_make_run_the_keys_command_finds_its_database(run_dir):  # noqa: F811
    run = Run(run_dir, free_port(), AUTH="required")
    try:
        run.wait_for_line("make key NAME=me ADMIN=1")
        env = without_database_settings(RUN_DIR=str(run_dir))
        created = subprocess.run([sys.executable, "-m", "api.keys", "create", "alice"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        assert "using the database of `make run`" in created.stderr
        made = subprocess.run(["make", "--no-print-directory", "key", "NAME=ops", "ADMIN=1",
                               f"PY={sys.executable}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stdout + made.stderr
        for key in (created.stdout.strip(), made.stdout.strip().splitlines()[-1]):
            assert parse_key(key) is not None, key
            status, _, body = request(run.base, "POST", "/api/expression", '{"expression": "2+2"}',
                                      {"Content-Type": "application/json", **bearer(key)})
            assert status == 202, body
        assert request(run.base, "GET", "/metrics", headers=bearer(made.stdout.strip().splitlines()[-1]))[0] == 200
    finally:
        assert run.stop() == 0, run.output
    assert not (run_dir / "database_url").exists(), "make run's database is gone: so is its address"


def test_make_key_without_a_name_says_how():
    made = subprocess.run(["make", "--no-print-directory", "key", f"PY={sys.executable}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 2
    assert "make key NAME=alice" in made.stderr


def test_key_names_are_compared_without_case_when_created_and_when_revoked(database_url, db):
    assert run_keys(database_url, "create", "bob").returncode == 0
    taken = run_keys(database_url, "create", "Bob")
    assert (taken.returncode, taken.stderr.strip()) == (
        1, "error: a live key named 'Bob' exists ('bob': names are compared without case); "
           "revoke it first or pick another name")
    revoked = run_keys(database_url, "revoke", "BOB")
    assert revoked.returncode == 0, revoked.stderr
    assert db.execute("SELECT name, revoked_at IS NOT NULL FROM api_keys").fetchall() == [("bob", True)]
    assert run_keys(database_url, "create", "Bob").returncode == 0, "a revoked name may be given again"
