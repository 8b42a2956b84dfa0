"""The web page's server side: the page and its fragments, the filter and
the detail, the cached overview, the same-origin rule."""

from __future__ import annotations

import re

import pytest

from tests.support import insert


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
