"""API keys: what a key looks like, and the command that manages them.

    python -m api.keys create NAME [--admin] [--weight W]
                                               prints the new key, once
    python -m api.keys set-weight NAME W       the live key's share of the evaluation time
    python -m api.keys list                    every key, live and revoked, with its weight
    python -m api.keys revoke NAME [--cancel-pending]
                                               the key stops working at once

A key reads "calc_<id>_<secret>": the id finds its row in api_keys, the
secret (32 random bytes, URL-safe base64) is stored only as its SHA-256 and
compared in constant time (api/auth.py). A plain hash is enough: the secret
is random, not a password a person chose, so there is nothing to guess.

The command connects with DATABASE_URL (or the PG* variables) as a role that
may write api_keys: the database's owner, the one migrations run as. The
API's own role may only read the table. With neither set, it uses the
database of a running `make run` of this checkout (`make key NAME=alice`),
or else libpq's defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import secrets
import sys

import psycopg

from core.database import connect, error_summary, load_query
from core.settings import database_url

PREFIX = "calc"
_KEY = re.compile(r"calc_([1-9][0-9]{0,18})_([A-Za-z0-9_-]{43})")
NAME_RULE = "1 to 64 characters: letters, digits and . _ @ -, starting with a letter or digit"
# One rule for names everywhere: compared without case (Carol is carol), when a
# key is created (the unique index on lower(name)) and when one is revoked.
CASE_RULE = "names are compared without case"
# A key's weight: its share of the Calculators' evaluation time relative to the
# other keys with work waiting (docs/design.md). The database checks the same
# range (sql/017_fair_share_of_time.sql, api_keys_weight_in_range).
MIN_WEIGHT, MAX_WEIGHT = 0.01, 1000.0
WEIGHT_RULE = (f"a key's weight is a number from {MIN_WEIGHT:g} to {MAX_WEIGHT:g} (its share of the "
               "evaluation time relative to the other keys; 1 by default)")


def parse_weight(text: str) -> float:
    """A weight as typed on the command line; ValueError (with WEIGHT_RULE)
    for anything that is not a finite number in range."""
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and MIN_WEIGHT <= weight <= MAX_WEIGHT):
        raise ValueError(f"{WEIGHT_RULE}; not {text!r}")
    return weight


def _weight_argument(text: str) -> float:
    try:
        return parse_weight(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def secret_sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def format_key(key_id: int, secret: str) -> str:
    return f"{PREFIX}_{key_id}_{secret}"


def parse_key(text: str) -> tuple[int, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = _KEY.fullmatch(text)
    if match is None:
        return None
    return int(match[1]), match[2]


def create_key(conn: psycopg.Connection, name: str, admin: bool = False, weight: float = 1.0) -> str:
    """A new key (shown to nobody else, ever: only its hash is stored)."""
    secret = secrets.token_urlsafe(32)
    key_id = conn.execute(load_query("create_api_key"), {
        "name": name, "secret_sha256": secret_sha256(secret), "is_admin": admin,
        "weight": weight}).fetchone()[0]
    return format_key(key_id, secret)


def set_weight(conn: psycopg.Connection, name: str, weight: float) -> str | None:
    """Give the live key of that name (compared without case) a new weight:
    its stored name, or None if there is no such key."""
    row = conn.execute(load_query("set_api_key_weight"), {"name": name, "weight": weight}).fetchone()
    return None if row is None else row[1]


def revoke_key(conn: psycopg.Connection, name: str, cancel_pending: bool = False) -> int | None:
    """Revoke the live key of that name (compared without case): None if there
    is none, else how many of its unfinished tasks were cancelled (with
    cancel_pending; else 0: they are still calculated, and admin keys still
    see them)."""
    with conn.transaction():
        row = conn.execute(load_query("revoke_api_key"), {"name": name}).fetchone()
        if row is None:
            return None
        if not cancel_pending:
            return 0
        return conn.execute(load_query("cancel_pending_of_key"), {"owner": row[0]}).fetchone()[0]


def list_keys(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(load_query("list_api_keys")).fetchall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name", help=NAME_RULE)
    create.add_argument("--admin", action="store_true",
                        help="an admin key sees and cancels every task, and opens the web page and /metrics")
    create.add_argument("--weight", type=_weight_argument, default=1.0,
                        help=f"its share of the evaluation time relative to the other keys with work "
                             f"waiting, {MIN_WEIGHT:g} to {MAX_WEIGHT:g} (default 1)")
    weigh = commands.add_parser("set-weight", help="change the weight of the live key of this name")
    weigh.add_argument("name")
    weigh.add_argument("weight", type=_weight_argument,
                       help=f"{MIN_WEIGHT:g} to {MAX_WEIGHT:g}; 2 gets twice the time of a key of weight 1")
    commands.add_parser("list", help="list the keys")
    revoke = commands.add_parser("revoke", help="revoke the live key of this name")
    revoke.add_argument("name")
    revoke.add_argument("--cancel-pending", action="store_true",
                        help="also cancel its unfinished tasks (else they are still calculated)")
    args = parser.parse_args(argv)
    url = database_url()
    if not url and not os.environ.get("PGHOST"):
        try:
            from tools.run_local import running_database_url
        except ImportError:  # the Docker image has no tools/ (nor `make run`)
            running_database_url = lambda: None  # noqa: E731
        url = running_database_url() or ""
        if url:
            print("using the database of `make run` (set DATABASE_URL for another one)", file=sys.stderr)
    try:
        with connect(url, autocommit=True, application_name="calculator-keys") as conn:
            return _run(conn, args)
    except psycopg.errors.InsufficientPrivilege:
        print("error: this database role may not manage keys; run as the database's owner "
              "(the role migrations run as)", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(f"error: {error_summary(error)}", file=sys.stderr)
        return 1


def _run(conn: psycopg.Connection, args) -> int:
    if args.command == "create":
        try:
            key = create_key(conn, args.name, args.admin, args.weight)
        except psycopg.errors.UniqueViolation:
            live = conn.execute("SELECT name FROM api_keys WHERE lower(name) = lower(%s) AND revoked_at IS NULL",
                                (args.name,)).fetchone()
            same = "" if live is None or live[0] == args.name else f" ({live[0]!r}: {CASE_RULE})"
            print(f"error: a live key named {args.name!r} exists{same}; revoke it first or pick another name",
                  file=sys.stderr)
            return 1
        except psycopg.errors.CheckViolation as error:
            if error.diag.constraint_name == "api_keys_weight_in_range":
                print(f"error: {WEIGHT_RULE}; not {args.weight:g}", file=sys.stderr)
                return 2
            print(f"error: a key's name is {NAME_RULE}; not {args.name!r}", file=sys.stderr)
            return 1
        print(key)
        weighted = "" if args.weight == 1 else f" of weight {args.weight:g}"
        print(f"created {'admin ' if args.admin else ''}key {args.name!r}{weighted}: it is shown this once "
              "and stored only as a hash; send it as 'Authorization: Bearer <key>'", file=sys.stderr)
        return 0
    if args.command == "revoke":
        cancelled = revoke_key(conn, args.name, args.cancel_pending)
        if cancelled is None:
            print(f"error: no live key named {args.name!r} ({CASE_RULE})", file=sys.stderr)
            return 1
        print(f"revoked key {args.name!r}" + (f"; cancelled {cancelled} unfinished tasks"
                                              if args.cancel_pending else ""), file=sys.stderr)
        return 0
    if args.command == "set-weight":
        try:
            stored = set_weight(conn, args.name, args.weight)
        except psycopg.errors.CheckViolation:
            print(f"error: {WEIGHT_RULE}; not {args.weight:g}", file=sys.stderr)
            return 2
        if stored is None:
            print(f"error: no live key named {args.name!r} ({CASE_RULE})", file=sys.stderr)
            return 1
        print(f"key {stored!r} now weighs {args.weight:g}", file=sys.stderr)
        return 0
    rows = list_keys(conn)
    width = max([len("name"), *(len(row[1]) for row in rows)])
    print(f"{'id':>5}  {'name':<{width}}  {'admin':<5}  {'created':<19}  {'revoked':<19}  {'weight':>6}  pending")
    for key_id, name, admin, created, revoked, weight, pending in rows:
        print(f"{key_id:>5}  {name:<{width}}  {'yes' if admin else 'no':<5}  {created:%Y-%m-%d %H:%M:%S}  "
              f"{f'{revoked:%Y-%m-%d %H:%M:%S}' if revoked else '-':<19}  {weight:>6g}  {pending}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
