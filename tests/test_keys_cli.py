"""The keys command as the README shows it: beside `make run` it
finds make run's database by itself (`python -m api.keys create alice`, or
`make key NAME=alice`), and key names follow one rule: compared without case,
when a key is created and when one is revoked."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from api.keys import parse_key, parse_weight
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


# --- weights: each key's share of the evaluation time ---------------------------

WEIGHT_MESSAGE = "a key's weight is a number from 0.01 to 1000"


def weights(db) -> dict[str, float]:
    return dict(db.execute("SELECT name, weight FROM api_keys WHERE revoked_at IS NULL").fetchall())


def listed_weights(database_url) -> dict[str, str]:
    listed = run_keys(database_url, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[-2:] == ["weight", "pending"]
    return {row.split()[1]: row.split()[-2] for row in rows}


def test_a_key_is_created_with_a_weight_and_its_weight_is_changed_by_name(database_url, db):
    assert run_keys(database_url, "create", "alice").returncode == 0
    heavy = run_keys(database_url, "create", "Bob", "--weight", "2.5")
    assert heavy.returncode == 0, heavy.stderr
    assert "of weight 2.5" in heavy.stderr
    assert weights(db) == {"alice": 1.0, "Bob": 2.5}
    assert listed_weights(database_url) == {"alice": "1", "Bob": "2.5"}
    changed = run_keys(database_url, "set-weight", "bob", "0.25")
    assert (changed.returncode, changed.stderr.strip()) == (0, "key 'Bob' now weighs 0.25")
    assert weights(db) == {"alice": 1.0, "Bob": 0.25}
    assert listed_weights(database_url) == {"alice": "1", "Bob": "0.25"}
    for edge in ("0.01", "1000", "1e3"):
        assert run_keys(database_url, "set-weight", "alice", edge).returncode == 0
        assert weights(db)["alice"] == float(edge)


def test_set_weight_of_a_key_that_is_not_live_says_so(database_url, db):
    assert run_keys(database_url, "create", "carol", "--weight", "3").returncode == 0
    assert run_keys(database_url, "revoke", "carol").returncode == 0
    missing = run_keys(database_url, "set-weight", "carol", "2")
    assert (missing.returncode, missing.stderr.strip()) == (
        1, "error: no live key named 'carol' (names are compared without case)")
    assert db.execute("SELECT weight FROM api_keys").fetchall() == [(3.0,)]


@pytest.mark.parametrize("weight", ["abc", "0", "0.009", "1000.5", "-1", "nan", "inf", "", "1,5"])
def test_a_weight_out_of_range_or_not_a_number_is_refused_and_changes_nothing(database_url, db, weight):
    assert run_keys(database_url, "create", "dave").returncode == 0
    before = db.execute("SELECT * FROM api_keys ORDER BY id").fetchall()
    for args in (("create", "erin", "--weight", weight), ("set-weight", "dave", weight)):
        refused = run_keys(database_url, *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert WEIGHT_MESSAGE in refused.stderr and f"not {weight!r}" in refused.stderr, refused.stderr
        assert refused.stdout == "", "no key printed"
    assert db.execute("SELECT * FROM api_keys ORDER BY id").fetchall() == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weight=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.floats(min_value=0.0, max_value=0.02), st.floats(min_value=999.0, max_value=1001.0),
                        st.sampled_from([0.01, 1000.0, 0.009999999999999998, 1000.0000000000001])))
def test_the_command_accepts_exactly_the_weights_the_database_accepts(db, weight):
    """The oracle: the database's own CHECK on api_keys.weight."""
    db.execute("INSERT INTO api_keys (name, secret_sha256) VALUES ('w', sha256('w')) ON CONFLICT DO NOTHING")
    try:
        parse_weight(repr(weight))
        cli_accepts = True
    except ValueError:
        cli_accepts = False
    try:
        with db.transaction():
            db.execute("UPDATE api_keys SET weight = %s WHERE name = 'w'", (weight,))
            raise Rollback
    except Rollback:
        db_accepts = True
    except psycopg.errors.CheckViolation:
        db_accepts = False
    assert cli_accepts == (db_accepts and not math.isnan(weight)), weight


class Rollback(Exception):
    pass


def test_make_key_passes_the_weight(database_url, db):
    env = without_database_settings(DATABASE_URL=database_url)
    made = subprocess.run(["make", "--no-print-directory", "key", "NAME=frank", "WEIGHT=4",
                           f"PY={sys.executable}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    assert weights(db) == {"frank": 4.0}
    refused = subprocess.run(["make", "--no-print-directory", "key", "NAME=gina", "WEIGHT=heavy",
                              f"PY={sys.executable}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and WEIGHT_MESSAGE in refused.stderr
    assert weights(db) == {"frank": 4.0}
