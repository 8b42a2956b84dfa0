"""The web page's server side: the page and its fragments, the filter and
the detail, the cached overview, the same-origin rule."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, strategies as st

from api.tenants import Tenant, fair_shares
from tests.support import insert, write_tenant_usage


def test_the_page_renders_with_the_queue_and_the_tasks(client, db):
    db.execute("DELETE FROM calculators")  # those killed by earlier tests
    done = db.execute("INSERT INTO tasks (expression, status, result, finished_at) "
                      "VALUES ('2+2', 'done', '4', now()) RETURNING id").fetchone()[0]
    failed = db.execute("INSERT INTO tasks (expression, status, error, finished_at) "
                        "VALUES ('1/0', 'error', 'division by zero', now()) RETURNING id").fetchone()[0]
    waiting = insert(db, "x+1", '{"x": 1}')
    db.execute("SELECT recount_tasks()")  # rows inserted already finished are not counted by the triggers
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert 'id="stat-pending">1<' in html and 'id="stat-done">1<' in html and 'id="stat-error">1<' in html
    for task_id in (done, failed, waiting):
        assert f'data-id="{task_id}"' in html
    assert "division by zero" in html and "No Calculator has sent a heartbeat" in html
    # every form control has a label
    for control in re.findall(r'<(?:input|select) id="([^"]+)"', html):
        assert f'<label for="{control}">' in html, control


def test_the_page_and_its_assets_stay_small(client, db):
    """Under 100 KB with a full list: 50 tasks with long expressions and
    many variables, and 10 failures."""
    variables = "{" + ", ".join(f'"v{i}": {i}' for i in range(20)) + "}"
    db.execute("INSERT INTO tasks (expression, variables) SELECT repeat('sqrt(x) + ', 500) || 'x', %s::jsonb "
               "FROM generate_series(1, 50)", (variables,))
    db.execute("INSERT INTO tasks (expression, status, error, finished_at) "
               "SELECT repeat('1/0 + ', 100), 'error', repeat('division by zero ', 20), now() "
               "FROM generate_series(1, 10)")
    total = sum(len(client.get(path).get_data()) for path in
                ("/", "/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"))
    print(f"page and assets: {total} bytes")
    assert total < 100_000, total


def test_the_status_filter_and_the_detail(client, db):
    db.execute("INSERT INTO tasks (expression, status, error, finished_at) "
               "VALUES ('1/0', 'error', 'division by zero', now())")
    pending = insert(db, "2+2")
    html = client.get("/dashboard/tasks?status=pending").get_data(as_text=True)
    rows = re.findall(r'<tr data-id="(\d+)" data-status="(\w+)"', html)
    assert rows == [(str(pending), "pending")]
    refused = client.get("/dashboard/tasks?status=bogus")
    assert refused.status_code == 400 and "status must be one of pending, done, error" in refused.json["msg"]
    detail = client.get(f"/dashboard/task/{pending}").get_data(as_text=True)
    assert f"Task {pending}" in detail and "waiting" in detail
    assert client.get("/dashboard/task/999").status_code == 404
    assert client.get("/dashboard/task/abc").status_code == 400
    assert f"Task {pending}" in client.get(f"/?task={pending}").get_data(as_text=True)


def test_the_task_list_is_the_listing_of_the_api_with_older_pages(client, db):
    """The page's list is a page of GET /api/tasks (the same query and
    cursor): "Older tasks" leads to the next 50, each task on one page."""
    db.execute("INSERT INTO tasks (expression) SELECT i || '+1' FROM generate_series(1, 120) AS i")
    seen, path = [], "/dashboard/tasks?status=pending"
    for _ in range(3):
        html = client.get(path).get_data(as_text=True)
        seen += [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]
        older = re.search(r'<a href="/\?([^"]+)" class="older"', html)
        if older is None:
            break
        path = "/dashboard/tasks?" + older.group(1).replace("&amp;", "&")
    assert seen == list(range(120, 0, -1))
    assert older is None and "Older tasks: pending</h3>" in html and 'class="newest"' in html
    cursor = re.search(r"cursor=([^&]+)", path).group(1)
    api = client.get(f"/api/tasks?status=pending&limit=20&cursor={cursor}").json
    assert [t["expression_id"] for t in api["tasks"]] == list(range(20, 0, -1))


def test_the_overview_is_shared_for_a_moment(client, db, monkeypatch):
    from api import dashboard
    monkeypatch.setattr(dashboard, "CACHE_SECONDS", 60)
    client.get("/dashboard/overview")
    insert(db, "2+2")
    assert 'id="stat-pending">0<' in client.get("/dashboard/overview").get_data(as_text=True)
    monkeypatch.setattr(dashboard, "CACHE_SECONDS", 0)
    assert 'id="stat-pending">1<' in client.get("/dashboard/overview").get_data(as_text=True)


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://localhost:5001"},
])
def test_state_changing_requests_from_other_sites_are_refused(client, db, headers):
    response = client.post("/api/expression", json={"expression": "2+2"}, headers=headers)
    assert response.status_code == 403
    assert "must come from this site" in response.json["msg"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


@pytest.mark.parametrize("headers", [
    {}, {"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
    {"Sec-Fetch-Site": "none"},
])
def test_same_origin_and_non_browser_requests_pass(client, db, headers):
    response = client.post("/api/expression", json={"expression": "2+2"}, headers=headers)
    assert response.status_code == 202


def test_reading_is_allowed_from_anywhere(client, db):
    assert client.get("/api/stats", headers={"Origin": "https://evil.example",
                                             "Sec-Fetch-Site": "cross-site"}).status_code == 200


# --- the fairness panel: each tenant's share of the time against its entitlement ---

def fairness_rows(html: str) -> dict[str, list[str]]:
    """{tenant: [weight, share, entitled to, running, pending]} from the panel."""
    table = re.search(r'<table id="fairness".*?</table>', html, re.S)
    if table is None:
        return {}
    rows = {}
    for tenant, cells in re.findall(r'<tr data-tenant="([^"]*)"[^>]*>(.*?)</tr>', table[0], re.S):
        texts = [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]
        assert texts[0] == tenant
        rows[tenant] = texts[1:]
    return rows


def test_the_fairness_panel_shows_each_active_tenants_share_against_its_entitlement(client, db, calculator_rows):
    from api.keys import create_key
    create_key(db, "alice", weight=3)   # 1: pending tasks and time
    create_key(db, "bob")               # 2: time over the last minute, nothing pending
    create_key(db, "carol", weight=2)   # 3: time long ago only: not active
    write_tenant_usage(calculator_rows, {"1": [40, 4, 1], "2": [9, 2, 1], "3": [50, 0, 0]})
    write_tenant_usage(calculator_rows, {"1": [10, 2, 1], "none": [1, 0, 0]})
    write_tenant_usage(calculator_rows, {"2": [500, 60, 2]}, heartbeat_age=20)   # not live
    db.execute("INSERT INTO tasks (expression, owner) SELECT '1', 1 FROM generate_series(1, 5)")
    db.execute("INSERT INTO tasks (expression) SELECT '1' FROM generate_series(1, 2)")
    html = client.get("/dashboard/overview").get_data(as_text=True)
    # Time over the last minute: alice 6 s, bob 2 s, no owner 0 s (8 s in all).
    # Weights of the active tenants: alice 3, bob 1, no owner 1 (5 in all).
    assert fairness_rows(html) == {
        "alice": ["3", "75 %", "60 %", "2", "5"],
        "bob": ["1", "25 %", "20 %", "1", "0"],
        "(no owner)": ["1", "0 %", "20 %", "0", "2"],
    }
    assert list(fairness_rows(html)) == ["alice", "bob", "(no owner)"], "the largest share first"
    assert '<tr data-tenant="(no owner)" class="warn">' in html, "far below its entitlement"
    assert fairness_rows(client.get("/").get_data(as_text=True)) == fairness_rows(html)


def test_the_fairness_panel_shows_small_shares_as_small_not_as_zero(client, db, calculator_rows):
    """Found from outside: with weights 1,000, 1 and 0.01 every figure below
    1 % read "0 %", share and entitlement alike."""
    from api.keys import create_key
    create_key(db, "big", weight=1000)
    create_key(db, "one")
    create_key(db, "tiny", weight=0.01)
    write_tenant_usage(calculator_rows, {"1": [60, 59.9, 2], "2": [0.06, 0.06, 0], "3": [0.0004, 0.0004, 0]})
    rows = fairness_rows(client.get("/dashboard/overview").get_data(as_text=True))
    assert rows["big"][1:3] == ["100 %", "100 %"]
    assert rows["one"][1:3] == ["0.1 %", "&lt; 0.1 %"]  # 0.06 s of 59.96; 1 / 1,001.01
    assert rows["tiny"][1:3] == ["&lt; 0.1 %", "&lt; 0.1 %"]


def test_the_fairness_panel_without_tenants_or_without_figures(client, db, calculator_rows, monkeypatch):
    from api import dashboard
    monkeypatch.setattr(dashboard, "CACHE_SECONDS", 0)
    assert "No tenant has work waiting" in client.get("/dashboard/overview").get_data(as_text=True)
    write_tenant_usage(calculator_rows, {})   # a Calculator that reports no time (yet)
    insert(db, "1+1")
    rows = fairness_rows(client.get("/dashboard/overview").get_data(as_text=True))
    assert rows == {"(no owner)": ["1", "–", "100 %", "0", "1"]}


def test_a_key_that_is_not_an_admin_does_not_see_the_fairness_panel(make_app, db, calculator_rows):
    from api.keys import create_key
    from tests.test_auth import bearer
    alice, root = create_key(db, "alice"), create_key(db, "root", admin=True)
    write_tenant_usage(calculator_rows, {"1": [3, 3, 1]})
    client = make_app(AUTH="required").test_client()
    for path in ("/", "/dashboard/overview"):
        refused = client.get(path, headers=bearer(alice))
        assert refused.status_code == 403 and "needs an admin key" in refused.get_data(as_text=True)
        assert "fairness" not in refused.get_data(as_text=True)
        assert fairness_rows(client.get(path, headers=bearer(root)).get_data(as_text=True))["alice"][:2] == \
            ["1", "100 %"]


tenant = st.builds(
    lambda key_id, weight, minute, running, pending: Tenant(key_id, None if key_id is None else f"k{key_id}",
                                                            False, weight, minute, minute, running, pending),
    st.one_of(st.none(), st.integers(1, 10**6)), st.floats(0.01, 1000), st.floats(0, 1e4), st.integers(0, 50),
    st.integers(0, 10**6))


@given(st.lists(tenant, max_size=30, unique_by=lambda t: t.key_id))
def test_fair_shares_against_their_definition(rows):
    """The active tenants only; the shares add up to 1 (when anyone had
    time), the entitlements always; each entitlement is the weight's part."""
    shares = fair_shares(rows)
    active = [t for t in rows if t.cpu_seconds_last_minute > 0 or t.pending > 0]
    assert sorted(s.tenant.label for s in shares) == sorted(t.label for t in active)
    if active:
        assert math.isclose(sum(s.entitlement for s in shares), 1)
        weights = sum(t.weight for t in active)
        for s in shares:
            assert math.isclose(s.entitlement, s.tenant.weight / weights)
    time_used = sum(t.cpu_seconds_last_minute for t in active)
    if time_used > 0:
        assert math.isclose(sum(s.share for s in shares), 1)
        assert all(math.isclose(s.share, s.tenant.cpu_seconds_last_minute / time_used) for s in shares)
    else:
        assert all(s.share is None for s in shares)
