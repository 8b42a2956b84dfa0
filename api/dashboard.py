"""The web page at `/`: a playground, the queue live, the tasks.

Server-rendered (Jinja templates in api/templates/) with a little JavaScript
(api/static/dashboard.js), no build step. The live parts are HTML fragments
the page fetches again every few seconds while it is visible:

    GET /                          the whole page (?status=error, ?task=42 work without JS)
    GET /dashboard/overview        the overview (queue, outcomes, live Calculators,
                                   each tenant's share of the time: api/tenants.py)
    GET /dashboard/tasks?status=&cursor=   recent tasks (a page of GET /api/tasks's
                                   listing, api/listing.py), and the recent failures
    GET /dashboard/task/<id>       one task's detail

The playground submits through the public API (POST /api/expression) and
waits for the result with GET /api/result/<id>?wait= (a long poll).

Database cost: each fragment is kept for CACHE_SECONDS per API process and
shared by every tab and every visitor, so ten open tabs cost what one does
(BENCHMARKS.md, "The dashboard's database cost"); a hidden tab does not poll.
"""

from __future__ import annotations

import os
import threading
import time

from flask import Blueprint, current_app, render_template, request

from api.db import connection
from api.errors import BadRequest
from api.expressions import parse_expression_id
from api.listing import STATUSES, Filters, decode_cursor, encode_cursor, list_page
from api.metrics import _queue_stats, live_calculators
from api.tenants import fair_shares, tenants
from core.database import load_query

blueprint = Blueprint("dashboard", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/dashboard/static")

# DASHBOARD_CACHE_SECONDS: how long a fragment is shared (0: every request reads).
CACHE_SECONDS = float(os.environ.get("DASHBOARD_CACHE_SECONDS", "1"))
RECENT_TASKS = 50
RECENT_FAILURES = 10
OVERVIEW_POLL_SECONDS = 2
TASKS_POLL_SECONDS = 5

# The URL the page's "Cancel" button POSTs to for a pending task, with {id}
# for its id (api/cancel.py); app.config["DASHBOARD_CANCEL_URL"] overrides it,
# None: no button. api/static/dashboard.js does the rest (it shows the
# answer's "msg" on failure and refreshes the list on success).
CANCEL_URL: str | None = "/api/result/{id}/cancel"


class _Cache:
    """Values kept for CACHE_SECONDS, computed by one thread at a time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict = {}

    def get(self, key, compute):
        with self._lock:
            entry = self._values.get(key)
            if entry is not None and time.monotonic() - entry[0] < CACHE_SECONDS:
                return entry[1]
            value = compute()
            self._values[key] = (time.monotonic(), value)
            return value


def _cache() -> _Cache:
    return current_app.extensions.setdefault("dashboard_cache", _Cache())


def overview() -> dict:
    def compute():
        stats = _queue_stats()
        total = sum(stats["outcomes"].values())
        return {"stats": stats, "calculators": live_calculators(),
                "shares": fair_shares(tenants(with_pending=True)),
                "finished_total": total, "at": time.time()}
    return _cache().get("overview", compute)


def statuses() -> list[str]:
    """The statuses a task may have: pending and those /api/stats counts."""
    return ["pending", *overview()["stats"]["outcomes"].keys()]


def _status_filter() -> str | None:
    status = request.args.get("status") or None
    if status is not None and status not in statuses():
        raise BadRequest(f"status must be one of {', '.join(statuses())}, not {status[:40]!r}")
    return status


def recent_tasks(status: str | None, limit: int, cursor: str | None = None) -> tuple[list[dict], str | None]:
    """A page of every owner's tasks, newest first, as GET /api/tasks lists
    them (the same queries): (rows, the cursor of the next page or None)."""
    filters = Filters([status] if status else list(STATUSES), None, None, None, limit)
    before = decode_cursor(cursor, filters)

    def compute():
        rows, last = list_page(filters, before)
        return rows, (None if last is None else encode_cursor(last, filters))
    return _cache().get(("tasks", status, limit, before), compute)


def task_detail(task_id: int) -> dict | None:
    with connection() as conn:
        cursor = conn.execute(load_query("task_detail"), {"id": task_id})
        row = cursor.fetchone()
        return None if row is None else dict(zip([c.name for c in cursor.description], row))


def _context(**extra) -> dict:
    return {
        "cancel_url": current_app.config.get("DASHBOARD_CANCEL_URL", CANCEL_URL),
        "overview_poll": OVERVIEW_POLL_SECONDS,
        "tasks_poll": TASKS_POLL_SECONDS,
        "cache_seconds": CACHE_SECONDS,
        "max_wait": current_app.config["SETTINGS"].max_wait,
        **extra,
    }


def _tasks_context(status: str | None) -> dict:
    cursor = request.args.get("cursor") or None
    tasks, older = recent_tasks(status, RECENT_TASKS, cursor)
    return {"tasks": tasks, "older": older, "cursor": cursor,
            "failures": recent_tasks("error", RECENT_FAILURES)[0],
            "status": status, "statuses": statuses()}


@blueprint.get("/")
def page():
    status = _status_filter()
    detail, detail_id = None, request.args.get("task", "").strip()
    if detail_id:
        detail = task_detail(parse_expression_id(detail_id))
    return render_template("dashboard.html", **_context(
        overview=overview(), detail=detail, detail_id=detail_id, **_tasks_context(status)))


@blueprint.get("/dashboard/overview")
def overview_fragment():
    return render_template("overview.html", **_context(overview=overview()))


@blueprint.get("/dashboard/tasks")
def tasks_fragment():
    return render_template("tasks.html", **_context(**_tasks_context(_status_filter())))


@blueprint.get("/dashboard/task/<task_id>")
def task_fragment(task_id: str):
    try:
        number = parse_expression_id(task_id)
    except BadRequest as error:
        if error.status != 404:
            raise
        # An id past bigint: no such task, answered as the fragment the page shows.
        return render_template("task_detail.html", **_context(detail=None, detail_id=task_id.lstrip("0"))), 404
    detail = task_detail(number)
    html = render_template("task_detail.html", **_context(detail=detail, detail_id=number))
    return html, (200 if detail is not None else 404)
