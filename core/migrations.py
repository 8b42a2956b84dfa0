"""Numbered SQL migrations in sql/, applied by one explicit command:

    python -m core.migrations          # apply what is missing
    python -m core.migrations --check  # exit 1 if the database is behind

Applied versions are recorded in schema_migrations. An advisory lock makes
two migrators started together take turns instead of racing. The API and the
Calculator never run DDL; they call check_schema() at start-up.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.database import SQL_DIR, connect
from core.settings import database_url

log = logging.getLogger("migrations")

# Arbitrary, but fixed: every migrator of this project takes the same lock.
ADVISORY_LOCK_KEY = 7_301_955_433_001

_FILE_NAME = re.compile(r"(\d+)_([\w-]+)\.sql\Z")


class SchemaError(RuntimeError):
    """The database schema is not the one this code was written for."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available_migrations(directory: Path = SQL_DIR) -> list[Migration]:
    found = []
    for path in directory.glob("*.sql"):
        match = _FILE_NAME.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SchemaError(f"two migration files share a number in {directory}")
    return found


def required_version() -> int:
    return available_migrations()[-1].version


def current_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return row[0]


def missing_versions(conn: psycopg.Connection) -> list[int]:
    """Versions of sql/ not applied to this database (any, not only the newest)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")} if row[0] else set()
    return [m.version for m in available_migrations() if m.version not in done]


def check_schema(conn: psycopg.Connection) -> int:
    """The schema version; SchemaError with instructions if it is behind, or if
    any migration is missing (a branch's lower number merged after a higher one)."""
    have, need = current_version(conn), required_version()
    missing = missing_versions(conn)
    if have < need or missing:
        raise SchemaError(
            f"the database schema is at version {have} but this code needs version {need}"
            + (f" (missing: {', '.join(map(str, missing))})" if missing and have >= need else "")
            + ": run `python -m core.migrations` (or `make migrate`) first")
    return have


def apply_migrations(conn: psycopg.Connection) -> list[Migration]:
    """Apply every missing migration, each in its own transaction."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for migration in available_migrations():
            if migration.version in done:
                continue
            _apply(conn, migration)
            log.info("applied migration version=%d name=%s", migration.version, migration.name)
            applied.append(migration)
        return applied
    finally:
        _unlock(conn)


def _apply(conn: psycopg.Connection, migration: Migration, tries: int = 3) -> None:
    """One migration in one transaction. Roles are per cluster while the
    advisory lock is per database: a migrator of another database on the same
    cluster may create the same role a moment before us (our CREATE ROLE then
    fails on the unique name); trying again finds the role there."""
    for attempt in range(1, tries + 1):
        try:
            with conn.transaction():
                conn.execute(migration.path.read_text())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name))
            return
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject) as error:
            if attempt == tries:
                raise
            log.info("migration version=%d met a concurrent migrator (%s); trying again",
                     migration.version, str(error).strip().splitlines()[0])


def _unlock(conn: psycopg.Connection) -> None:
    # On a dead connection the lock is gone with the session; an error here
    # must not hide the one that brought us here.
    if conn.closed or conn.broken:
        return
    try:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    except psycopg.Error as error:
        log.warning("could not release the migration lock (%s); it ends with the session",
                    str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.migrations", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the schema is current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with connect(database_url(), application_name="calculator-migrations") as conn:
            if args.check:
                check_schema(conn)
                print(f"schema is current (version {current_version(conn)})")
                return 0
            applied = apply_migrations(conn)
            version = current_version(conn)
    except SchemaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as error:
        print(f"error: cannot connect to the database: {str(error).strip()}", file=sys.stderr)
        return 1
    print(f"applied {len(applied)} migration(s); schema is at version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
