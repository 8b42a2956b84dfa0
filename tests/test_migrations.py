"""Migrations: applied in order, once, under a lock; code refuses an old schema."""

from __future__ import annotations


import psycopg
import pytest

from core.migrations import (SchemaError, apply_migrations, available_migrations,
                             check_schema, current_version, required_version)
from tests.conftest import create_database
from tests.support import run_in_threads, wait_for


@pytest.fixture
def empty_database(server_url):
    return create_database(server_url, prefix="calculator_migrations")


def test_migration_files_are_numbered_in_order():
    versions = [m.version for m in available_migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert required_version() == versions[-1]


def test_applying_twice_is_a_no_op(empty_database):
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert current_version(conn) == 0
        first = apply_migrations(conn)
        assert [m.version for m in first] == [m.version for m in available_migrations()]
        assert apply_migrations(conn) == []
        assert current_version(conn) == required_version()
        rows = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        assert rows == len(available_migrations())


def test_two_migrators_started_together_do_not_race(empty_database):
    applied, errors = [], []

    def migrate():
        try:
            with psycopg.connect(empty_database, autocommit=True) as conn:
                applied.append(len(apply_migrations(conn)))
        except Exception as error:  # pragma: no cover - the assertion shows it
            errors.append(error)

    run_in_threads(migrate, 3)
    assert errors == []
    assert sorted(applied) == [0, 0, len(available_migrations())]


def test_code_refuses_a_schema_that_is_behind(empty_database):
    with psycopg.connect(empty_database, autocommit=True) as conn:
        with pytest.raises(SchemaError, match="run `python -m core.migrations`"):
            check_schema(conn)
        apply_migrations(conn)
        check_schema(conn)
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (required_version(),))
        with pytest.raises(SchemaError, match=f"needs version {required_version()}"):
            check_schema(conn)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'back')",
                      (required_version(),))
        check_schema(conn)
        # A lower number merged after a higher one was applied: until it is
        # applied too, the schema is behind.
        conn.execute("DELETE FROM schema_migrations WHERE version = 5")
        with pytest.raises(SchemaError, match="missing: 5"):
            check_schema(conn)


def test_the_calculator_exits_with_a_clear_message_on_an_old_schema(empty_database, tmp_path):
    from tests.support import CalculatorProcess
    calc = CalculatorProcess(empty_database, tmp_path / "calc.log")
    assert calc.process.wait(30) == 2
    assert "this code needs version" in calc.log()


def test_the_api_refuses_to_start_on_an_old_schema(empty_database):
    from api import create_app
    with pytest.raises(SchemaError):
        create_app({"DATABASE_URL": empty_database})


def test_readyz_says_the_schema_is_behind(empty_database):
    from api import create_app
    app = create_app({"DATABASE_URL": empty_database, "CHECK_SCHEMA": False})
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert "run `python -m core.migrations`" in response.json["msg"]
    finally:
        app.extensions["pool"].close()


def test_migrators_of_two_databases_on_one_cluster_do_not_race_on_roles(tmp_path):
    """Roles are per cluster, the advisory lock per database: a migrator
    whose CREATE ROLE meets another database's migrator creating the same
    role (made certain here by holding that CREATE ROLE open) tries again."""
    import threading
    from tools.pgcluster import LocalPostgres
    with LocalPostgres() as cluster:
        first, second = create_database(cluster.url, "first"), create_database(cluster.url, "second")
        with psycopg.connect(first) as other_migrator:  # a transaction, left open
            other_migrator.execute("CREATE ROLE calculator_api NOLOGIN")
            errors: list[Exception] = []

            def migrate():
                try:
                    with psycopg.connect(second, autocommit=True) as conn:
                        apply_migrations(conn)
                except Exception as error:  # pragma: no cover - the assertion shows it
                    errors.append(error)
            thread = threading.Thread(target=migrate)
            thread.start()
            with psycopg.connect(cluster.url, autocommit=True) as observer:
                wait_for(lambda: observer.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0],
                    message="the second migrator to wait on the role's name")
            other_migrator.commit()
            thread.join(60)
        assert errors == []
        with psycopg.connect(second) as conn:
            assert current_version(conn) == required_version()
