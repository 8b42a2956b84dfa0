"""GET /api/tasks: what a key has submitted, newest first, a page at a time.

    GET /api/tasks?status=pending,error&since=...&until=...&limit=100
    -> {"tasks": [{"expression_id", "status", "expression", "variables",
                   "created_at", "finished_at", "attempts", "result" | "msg"}, ...],
        "next": "<cursor>" | null}
    GET /api/tasks?cursor=<next>&<the same filters>   -> the next page

A key lists its own tasks; an admin key (and everyone with AUTH=off) lists
every task, or one key's with ?owner=NAME.

The cursor is keyset pagination on the id: it holds the last id shown, and
the next page is the tasks below it. A page is one index walk per status
(sql/queries/list_tasks_*.sql), so it costs the same at the first page as at
the thousandth and at 10 million rows; no OFFSET, no count. It never repeats
or skips a task: tasks inserted meanwhile have larger ids (they are at the
top of a new listing, not in this one), and tasks deleted by retention
meanwhile simply do not appear. A task's status may change between pages
(a pending task listed on page 1 may be done by page 2); each appears once,
on the page its id falls on, with its status at that moment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify, request

from api.auth import caller
from api.db import connection
from api.errors import BadRequest
from api.expressions import outcome_json
from core.database import load_query

blueprint = Blueprint("listing", __name__, url_prefix="/api")

STATUSES = ("pending", "done", "error", "cancelled")
DEFAULT_LIMIT = 100
MAX_BIGINT = 2**63 - 1
FIND_OWNER = ("SELECT id FROM api_keys WHERE lower(name) = lower(%(name)s) "
              "ORDER BY revoked_at IS NULL DESC, id DESC LIMIT 1")


class Filters:
    """What a listing asks for, read from the query string."""

    def __init__(self, statuses: list[str], since: datetime | None, until: datetime | None,
                 owner: int | None, limit: int):
        self.statuses, self.since, self.until, self.owner, self.limit = statuses, since, until, owner, limit

    def fingerprint(self) -> str:
        """Ties a cursor to its filters (not the page size, which may change)."""
        text = json.dumps([self.statuses, _iso(self.since), _iso(self.until), self.owner])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_filters(args, who, max_limit: int) -> Filters:
    statuses = []
    for value in args.getlist("status"):
        for part in value.split(","):
            if part not in STATUSES:
                raise BadRequest(f"status must be one of {', '.join(STATUSES)} (several: "
                                 f"?status=pending,error), not {part[:40]!r}")
            if part not in statuses:
                statuses.append(part)
    since, until = _time(args, "since"), _time(args, "until")
    if since and until and since >= until:
        raise BadRequest("since must be before until")
    return Filters(sorted(statuses or STATUSES, key=STATUSES.index), since, until,
                   _owner(args.get("owner"), who), _limit(args.get("limit"), max_limit))


def _time(args, name: str) -> datetime | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
        # In UTC from here on; a time whose UTC falls outside years 1-9999 is refused too.
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name} must be a date and time in ISO 8601, like 2026-12-07T01:40:00Z, "
                         f"not {raw[:40]!r}") from None


def _limit(raw: str | None, max_limit: int) -> int:
    if raw is None:
        return min(DEFAULT_LIMIT, max_limit)
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw[:10]) <= max_limit:
        raise BadRequest(f"limit must be a whole number from 1 to {max_limit} (MAX_BATCH), not {raw[:40]!r}")
    return int(raw)


def _owner(name: str | None, who) -> int | None:
    """The key whose tasks are listed; None: everyone's."""
    if not who.sees_all:
        if name is not None and name.lower() != (who.name or "").lower():
            raise BadRequest(f"key {who.name!r} lists only its own tasks; ?owner= is for admin keys", 403)
        return who.owner
    if name is None:
        return None
    with connection() as conn:
        row = conn.execute(FIND_OWNER, {"name": name}).fetchone()
    if row is None:
        raise BadRequest(f"no API key is named {name[:64]!r}", 404)
    return row[0]


def encode_cursor(last_id: int, filters: Filters) -> str:
    text = json.dumps({"before": last_id, "filters": filters.fingerprint()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(raw: str | None, filters: Filters) -> int:
    """The id the page starts below."""
    if raw is None:
        return MAX_BIGINT
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        before, fingerprint = data["before"], data["filters"]
        if type(before) is not int or not 1 <= before <= MAX_BIGINT:
            raise ValueError
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this API gave: pass the \"next\" of the previous page as it is") \
            from None
    if fingerprint != filters.fingerprint():
        raise BadRequest("this cursor belongs to a listing with other filters: ask for the next page "
                         "with the same status, since, until and owner as the first")
    return before


def list_page(filters: Filters, before: int) -> tuple[list[dict], int | None]:
    """(rows, the id the next page starts below, or None: this is the last page)."""
    query = "list_tasks_of_everyone" if filters.owner is None else "list_tasks_of_owner"
    params = {"owner": filters.owner, "statuses": filters.statuses, "before": before,
              "since": filters.since, "until": filters.until, "limit": filters.limit + 1}
    with connection() as conn:
        cursor = conn.execute(load_query(query), params)
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    if len(rows) > filters.limit:
        rows = rows[:filters.limit]
        return rows, rows[-1]["id"]
    return rows, None


def task_json(row: dict, with_owner: bool) -> dict:
    task = outcome_json(row["id"], row["status"], row["result"], row["error"])
    task.update(expression=row["expression"], variables=row["variables"], attempts=row["attempts"],
                created_at=_iso(row["created_at"]), finished_at=_iso(row["finished_at"]))
    if with_owner:
        task["owner"] = row["owner_name"]
    return task


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@blueprint.get("/tasks")
def list_tasks():
    who = caller()
    filters = read_filters(request.args, who, current_app.config["SETTINGS"].max_batch)
    rows, last = list_page(filters, decode_cursor(request.args.get("cursor"), filters))
    return jsonify({"tasks": [task_json(row, who.sees_all) for row in rows],
                    "next": None if last is None else encode_cursor(last, filters)})
