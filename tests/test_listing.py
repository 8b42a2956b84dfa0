"""GET /api/tasks: order, filters, ownership, the cursor under inserts and
retention, and what a page costs (the index entries its plan reads)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from api.keys import create_key
from core.database import load_query
from core.settings import ApiSettings
from tests.support import wait_for

STATUSES = ("pending", "done", "error", "cancelled")
BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def keyed(api_url, db):
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True,
                      "SETTINGS": ApiSettings.from_env({"AUTH": "required", "MAX_BATCH": "50"})})
    yield app.test_client()
    app.extensions["result_waiter"].close()
    app.extensions["pool"].close()


@pytest.fixture
def keys(db):
    return {"alice": create_key(db, "alice"), "bob": create_key(db, "bob"),
            "root": create_key(db, "root", admin=True)}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def add(db, status: str, owner: int | None = None, minute: int = 0, finished_ago: str = "0 s") -> int:
    """A task in that status, created minute minutes after BASE."""
    outcome = {"pending": ("NULL", "NULL", "NULL"), "done": ("'4'", "NULL", "now() - %(ago)s::interval"),
               "error": ("NULL", "'division by zero'", "now() - %(ago)s::interval"),
               "cancelled": ("NULL", "NULL", "now() - %(ago)s::interval")}[status]
    return db.execute(
        "INSERT INTO tasks (expression, status, result, error, finished_at, owner, fair_round, created_at) "
        f"VALUES ('2+2', %(status)s, {outcome[0]}, {outcome[1]}, {outcome[2]}, %(owner)s, 1, %(at)s) RETURNING id",
        {"status": status, "owner": owner, "ago": finished_ago,
         "at": BASE + timedelta(minutes=minute)}).fetchone()[0]


def everything(client, headers=None, **query) -> list[dict]:
    """Every page of a listing, following "next"."""
    tasks, cursor = [], None
    for _ in range(10_000):
        response = client.get("/api/tasks", query_string={**query, **({"cursor": cursor} if cursor else {})},
                              headers=headers or {})
        assert response.status_code == 200, response.json
        page = response.json
        assert len(page["tasks"]) <= int(query.get("limit", 100))
        tasks += page["tasks"]
        cursor = page["next"]
        if cursor is None:
            return tasks
        assert page["tasks"], "a page with a next cursor is not empty"
    raise AssertionError("the listing never ended")


def test_a_task_is_listed_with_its_outcome(client, db):
    done, failed, waiting = add(db, "done", minute=1), add(db, "error", minute=2), add(db, "pending", minute=3)
    page = client.get("/api/tasks").json
    assert page["next"] is None
    assert [t["expression_id"] for t in page["tasks"]] == [waiting, failed, done]
    assert page["tasks"][2] == {"expression_id": done, "status": "done", "result": 4, "expression": "2+2",
                                "variables": {}, "attempts": 0, "created_at": "2026-01-01T00:01:00Z",
                                "finished_at": page["tasks"][2]["finished_at"], "owner": None}
    assert page["tasks"][1]["msg"] == "division by zero" and page["tasks"][0]["finished_at"] is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(STATUSES), st.sampled_from([None, "alice", "bob"]),
                               st.integers(0, 20)), max_size=30),
       statuses=st.lists(st.sampled_from(STATUSES), unique=True, max_size=4),
       who=st.sampled_from(["alice", "bob", "root", "root:alice"]),
       since=st.one_of(st.none(), st.integers(0, 20)), span=st.one_of(st.none(), st.integers(1, 20)),
       limit=st.integers(1, 7))
def test_every_page_in_order_is_what_the_filters_select(keyed, keys, db, rows, statuses, who, since, span, limit):
    """Against an oracle: the tasks that match, newest first, each once,
    whatever the page size."""
    db.execute("TRUNCATE tasks RESTART IDENTITY")
    owners = {"alice": 1, "bob": 2, None: None}
    made = [(add(db, status, owners[owner], minute), status, owner, minute) for status, owner, minute in rows]
    key, _, owner = who.partition(":")
    query = {"limit": limit}
    if statuses:
        query["status"] = ",".join(statuses)
    if owner:
        query["owner"] = owner
    until = None
    if since is not None:
        query["since"] = (BASE + timedelta(minutes=since)).isoformat()
    if span is not None:
        until = (since or 0) + span
        query["until"] = (BASE + timedelta(minutes=until)).isoformat()
    listed = everything(keyed, bearer(keys[key]), **query)
    visible = owner or (None if key == "root" else key)
    expected = [task_id for task_id, status, task_owner, minute in sorted(made, reverse=True)
                if (visible is None or task_owner == visible) and (not statuses or status in statuses)
                and (since is None or minute >= since) and (until is None or minute < until)]
    assert [t["expression_id"] for t in listed] == expected
    assert all(("owner" in t) == (key == "root") for t in listed)


def test_a_key_sees_only_its_own_tasks_and_may_not_ask_for_others(keyed, keys, db):
    mine, theirs = add(db, "pending", 1), add(db, "pending", 2)
    assert [t["expression_id"] for t in everything(keyed, bearer(keys["alice"]))] == [mine]
    assert [t["expression_id"] for t in everything(keyed, bearer(keys["alice"]), owner="ALICE")] == [mine]
    refused = keyed.get("/api/tasks?owner=bob", headers=bearer(keys["alice"]))
    assert refused.status_code == 403
    assert refused.json["msg"] == "key 'alice' lists only its own tasks; ?owner= is for admin keys"
    assert [t["expression_id"] for t in everything(keyed, bearer(keys["root"]), owner="bob")] == [theirs]
    unknown = keyed.get("/api/tasks?owner=carol", headers=bearer(keys["root"]))
    assert (unknown.status_code, unknown.json["msg"]) == (404, "no API key is named 'carol'")
    assert keyed.get("/api/tasks").status_code == 401


@pytest.mark.parametrize("query, message", [
    ("status=running", "status must be one of pending, done, error, cancelled (several: ?status=pending,error), "
                       "not 'running'"),
    ("limit=0", "limit must be a whole number from 1 to 1000 (MAX_BATCH), not '0'"),
    ("limit=1001", "limit must be a whole number from 1 to 1000 (MAX_BATCH), not '1001'"),
    ("limit=x", "limit must be a whole number from 1 to 1000 (MAX_BATCH), not 'x'"),
    ("since=yesterday", "since must be a date and time in ISO 8601, like 2026-12-07T01:40:00Z, not 'yesterday'"),
    ("since=2026-01-02&until=2026-01-01", "since must be before until"),
    ("until=0001-01-01T00:00:00%2B01:00", "until must be a date and time in ISO 8601, like 2026-12-07T01:40:00Z, "
                                          "not '0001-01-01T00:00:00+01:00'"),
    ("cursor=abc", "cursor is not one this API gave: pass the \"next\" of the previous page as it is"),
    ("cursor=eyJiZWZvcmUiOi0xLCJmaWx0ZXJzIjoiIn0", "cursor is not one this API gave: pass the \"next\" of the "
                                                   "previous page as it is"),
])
def test_what_a_listing_refuses_says_why(client, db, query, message):
    response = client.get(f"/api/tasks?{query}")
    assert (response.status_code, response.json) == (400, {"msg": message})


def test_a_cursor_is_refused_with_other_filters(client, db):
    for minute in range(3):
        add(db, "error", minute=minute)
    cursor = client.get("/api/tasks?status=error&limit=1").json["next"]
    assert client.get(f"/api/tasks?status=error&limit=2&cursor={cursor}").status_code == 200
    other = client.get(f"/api/tasks?status=done&cursor={cursor}")
    assert other.status_code == 400 and "belongs to a listing with other filters" in other.json["msg"]


def test_the_cursor_neither_repeats_nor_skips_under_inserts_and_retention(client, db):
    """Page through 300 tasks while another session inserts tasks and a
    retention pass deletes old finished ones mid-way: every task there at the
    start is listed once, in order, unless retention deleted it before its
    page; none inserted meanwhile is (they are newer than the first page)."""
    initial = [add(db, ("done", "error", "pending", "cancelled")[i % 4], minute=i,
                   finished_ago="2 hours" if i % 3 == 0 else "0 s") for i in range(300)]
    old = {task_id for i, task_id in enumerate(initial) if i % 3 == 0 and i % 4 != 2}
    stop, inserted = threading.Event(), []

    def insert_meanwhile():
        import psycopg
        with psycopg.connect(db.info.dsn, password=db.info.password, autocommit=True) as conn:
            while not stop.is_set():
                inserted.append(add(conn, "pending", minute=1000))

    thread = threading.Thread(target=insert_meanwhile)
    listed, cursor, pages, deleted_before_page = [], None, 0, None
    try:
        while True:
            page = client.get("/api/tasks", query_string={"limit": 25, **({"cursor": cursor} if cursor else {})}).json
            listed += [t["expression_id"] for t in page["tasks"]]
            pages += 1
            if pages == 1:
                thread.start()
                wait_for(lambda: inserted, message="an insert after the first page")
            if pages == 3:  # the retention pass, after three pages
                assert db.execute("SELECT tasks_maintenance('1 hour', 10000)").fetchone()[0] == len(old)
                deleted_before_page = set(listed)
            cursor = page["next"]
            if cursor is None:
                break
    finally:
        stop.set()
        thread.join(10)
    assert len(inserted) > 1, "tasks were inserted while the listing was read"
    assert not set(inserted) & set(listed)
    assert listed == sorted(set(listed), reverse=True), "no task twice, newest first"
    expected = {t for t in initial if t not in old or t in deleted_before_page}
    assert set(listed) == expected


# --- what a page costs --------------------------------------------------------

def rows_read(plan: dict) -> int:
    """Index entries and table rows the plan's scans read (returned or filtered out)."""
    own = 0
    if "Scan" in plan["Node Type"]:
        own = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
               + plan.get("Rows Removed by Index Recheck", 0)) * plan["Actual Loops"]
    return own + sum(rows_read(child) for child in plan.get("Plans", ()))


def explain(db, query: str, **params) -> dict:
    base = {"owner": None, "statuses": list(STATUSES), "before": 2**63 - 1, "since": None, "until": None,
            "limit": 11}
    return db.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + load_query(query), base | params).fetchone()[0][0]["Plan"]


@pytest.fixture
def long_history(db, keys):
    """alice's 3 pending tasks, then her 20,000 finished ones, then bob's
    20,000 finished ones and one cancelled one; fresh statistics."""
    pending = [add(db, "pending", 1) for _ in range(3)]
    db.execute("INSERT INTO tasks (expression, status, result, finished_at, owner, fair_round) "
               "SELECT '1', 'done', '1', now(), 1 + i / 20001, 1 FROM generate_series(1, 40000) AS i")
    cancelled = add(db, "cancelled", 2)
    db.execute("ANALYZE tasks")
    return pending, cancelled


@pytest.mark.timeout(300)
@pytest.mark.parametrize("query, params, found", [
    ("list_tasks_of_owner", {"owner": 1, "statuses": ["pending"]}, 3),
    ("list_tasks_of_owner", {"owner": 1, "statuses": ["pending", "cancelled", "error"]}, 3),
    ("list_tasks_of_owner", {"owner": 2, "statuses": ["cancelled"]}, 1),
    ("list_tasks_of_owner", {"owner": 1}, 11),
    ("list_tasks_of_owner", {"owner": 1, "before": 20000}, 11),
    ("list_tasks_of_everyone", {"statuses": ["pending"]}, 3),
    ("list_tasks_of_everyone", {"statuses": ["cancelled", "error"]}, 1),
    ("list_tasks_of_everyone", {}, 11),
])
def test_a_page_reads_a_page_of_index_entries_however_long_the_history(db, long_history, query, params, found):
    """A key's 3 pending tasks behind its 20,000 finished ones, or the one
    cancelled task among 40,000: each page reads at most a page's worth of
    entries per status (4 x 11), never the history."""
    plan = explain(db, query, **params)
    assert plan["Actual Rows"] == found
    assert rows_read(plan) <= 4 * 11 + 4, __import__("json").dumps(plan, indent=1)


def test_without_its_index_a_keys_page_costs_the_other_keys_history(db, long_history):
    """The measure above can fail: without tasks_listing_by_owner alice's
    first page walks past bob's newer 20,000 done tasks (the index is
    dropped in a transaction that is rolled back)."""
    import psycopg
    with db.transaction():
        db.execute("DROP INDEX tasks_listing_by_owner")
        plan = explain(db, "list_tasks_of_owner", owner=1)
        assert plan["Actual Rows"] == 11 and rows_read(plan) > 10_000
        raise psycopg.Rollback()
