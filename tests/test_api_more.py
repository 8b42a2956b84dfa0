"""Long-poll results, bulk submit and read, stats, and the OpenAPI document."""

from __future__ import annotations

import re
import threading
import time

import json

import pytest

from api.openapi import load_spec
from tests.http_client import request
from tests.support import insert, wait_for
from worker.task_queue import Outcome, claim_tasks, store_results


def finish(db, task_id: int, result: str = "4") -> None:
    """Store an outcome the way a Calculator does (so it NOTIFYs)."""
    tasks, _ = claim_tasks(db, 100, 30, 5)
    for task in tasks:
        if task.id == task_id:
            assert store_results(db, [Outcome(task, result, None)]) == {task_id}
            return
    raise AssertionError(f"task {task_id} was not claimable")


def waiting_requests(app):
    return app.extensions["result_waiter"].waiting_count


def test_wait_returns_as_soon_as_the_result_is_stored(db, http_server, app):
    task_id = insert(db, "2+2")
    answers = {}

    def waiting_client():
        started = time.monotonic()
        answers["response"] = request(http_server, "GET", f"/api/result/{task_id}?wait=20")
        answers["returned_at"] = time.monotonic()
        answers["took"] = answers["returned_at"] - started

    client = threading.Thread(target=waiting_client)
    client.start()
    waiting = waiting_requests(app)
    wait_for(lambda: waiting() >= 1, message="the request to be waiting")
    stored_at = time.monotonic()
    finish(db, task_id)
    client.join(20)
    status, _, body = answers["response"]
    assert (status, body) == (200, {"expression_id": task_id, "status": "done", "result": 4})
    assert answers["returned_at"] - stored_at < 0.5, "woken by the notification, not by the 1 s re-read"


def test_wait_gives_up_after_the_requested_time(db, http_server):
    task_id = insert(db, "2+2")
    started = time.monotonic()
    status, _, body = request(http_server, "GET", f"/api/result/{task_id}?wait=0.3")
    assert (status, body) == (202, {"expression_id": task_id, "status": "pending"})
    assert 0.3 <= time.monotonic() - started < 5


def test_two_hundred_waiters_do_not_exhaust_the_pool(db, http_server, app):
    ids = [insert(db, f"{i}") for i in range(200)]
    answers = []
    lock = threading.Lock()

    def waiting_client(task_id):
        response = request(http_server, "GET", f"/api/result/{task_id}?wait=30", timeout=60)
        with lock:
            answers.append(response)

    clients = [threading.Thread(target=waiting_client, args=(i,)) for i in ids]
    for client in clients:
        client.start()
    waiting = waiting_requests(app)
    wait_for(lambda: waiting() == 200, timeout=30, message="200 waiting requests")
    # Meanwhile the pool still serves others at once.
    assert request(http_server, "GET", f"/api/result/{ids[0]}")[0] == 202
    stats = app.extensions["pool"].get_stats()
    assert stats["pool_size"] <= app.config["SETTINGS"].pool_max_size
    tasks, _ = claim_tasks(db, 200, 30, 5)
    store_results(db, [Outcome(t, str(t.id), None) for t in tasks])
    for client in clients:
        client.join(30)
    assert len(answers) == 200 and all(status == 200 for status, _, _ in answers)


@pytest.mark.parametrize("wait", ["-1", "abc", "31", "nan", "1e999"])
def test_bad_wait_values(client, db, wait):
    task_id = insert(db, "1")
    response = client.get(f"/api/result/{task_id}?wait={wait}")
    assert response.status_code == 400
    assert "wait must be a number of seconds from 0 to 30" in response.json["msg"]


def test_bulk_submit_inserts_all_in_order_with_one_notification(client, db, database_url):
    import psycopg
    items = [{"expression": f"x + {i}", "variables": {"x": i}} for i in range(50)] + [{"expression": "2+2"}]
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_inserted")
        response = client.post("/api/expressions", json={"items": items})
        assert response.status_code == 202
        notifications = list(listener.notifies(timeout=0.5))
    ids = response.json["expression_ids"]
    assert len(ids) == 51 and len(notifications) == 1
    rows = dict(db.execute("SELECT id, expression FROM tasks").fetchall())
    assert [rows[i] for i in ids] == [item["expression"] for item in items]


def test_bulk_submit_is_all_or_nothing_and_names_every_bad_item(client, db):
    items = [{"expression": "1"}, {"expression": "x"}, "2+2", {"expression": "1", "oops": 1},
             {"expression": "(1"}, {"variables": {}}]
    response = client.post("/api/expressions", json={"items": items})
    assert response.status_code == 400
    assert response.json["msg"] == "5 of 6 items are invalid; nothing was submitted"
    errors = {e["index"]: e["msg"] for e in response.json["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5]
    assert errors[1] == "missing values for x"
    assert errors[2] == "an item must be an object, not a string"
    assert errors[3] == "unknown key(s): oops"
    assert "is never closed" in errors[4]
    assert errors[5] == "missing key(s): expression"
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


@pytest.mark.parametrize("body, msg", [
    ({"items": []}, "'items' must hold 1 to 1000 submissions, not 0"),
    ({"items": {}}, "'items' must be an array, not an object"),
    ({"items": [{"expression": "1"}] * 1001}, "'items' must hold 1 to 1000 submissions, not 1001"),
    ({}, "missing key(s): items"),
])
def test_bulk_submit_shape_errors(client, db, body, msg):
    response = client.post("/api/expressions", json=body)
    assert response.status_code == 400 and response.json["msg"] == msg


def test_bulk_read_in_the_order_asked(client, db):
    done = db.execute("INSERT INTO tasks (expression, status, result, finished_at) "
                      "VALUES ('1', 'done', '1', now()) RETURNING id").fetchone()[0]
    pending = insert(db, "2")
    response = client.get(f"/api/results?ids={pending},{done},999")
    assert response.status_code == 200
    assert response.json == {"results": [
        {"expression_id": pending, "status": "pending"},
        {"expression_id": done, "status": "done", "result": 1},
        {"expression_id": 999, "status": "unknown", "msg": "no expression with id 999"},
    ]}
    assert client.get("/api/results?ids=1,x").status_code == 400
    assert client.get("/api/results").json["msg"] == "give ids as ?ids=1,2,3"


def test_stats_count_the_queue_outcomes_and_live_calculators(client, db, calculators):
    insert(db, "1")
    db.execute("UPDATE tasks SET status = 'error', error = 'x', finished_at = now() WHERE id = %s",
               (insert(db, "1/0"),))
    empty = client.get("/api/stats").json
    assert empty["queue"]["pending"] == 1
    assert empty["outcomes"] == {"done": 0, "error": 1, "cancelled": 0}
    assert empty["live_calculators"] == 0
    calc = calculators()
    wait_for(lambda: client.get("/api/stats").json["outcomes"]["done"] == 1)
    stats = client.get("/api/stats").json
    assert stats["live_calculators"] == 1
    assert stats["queue"] == {"pending": 0, "queued": 0, "leased": 0, "expired_leases": 0,
                              "oldest_pending_seconds": 0.0}
    assert stats["results_per_second_last_minute"] == pytest.approx(2 / 60, abs=0.001)
    calc.stop()
    assert client.get("/api/stats").json["live_calculators"] == 0, "a clean stop deregisters"


def test_every_route_is_described_in_openapi(app):
    spec = load_spec()
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in described, f"{method} {path} is not in api/openapi.json"
    assert len(described) == sum(len(r.methods - {"HEAD", "OPTIONS"}) for r in app.url_map.iter_rules()
                                 if r.endpoint != "static")


def test_openapi_examples_are_valid_requests(client, db):
    spec = load_spec()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            examples = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("examples", {})
            for name, example in examples.items():
                response = client.open(path, method=method.upper(), json=example["value"])
                assert response.status_code == 202, (path, name, response.json)
    served = client.get("/api/openapi.json")
    assert served.status_code == 200 and served.json["paths"].keys() == spec["paths"].keys()


def test_the_served_openapi_document_states_this_service_s_limits(api_url, db):
    from api import create_app
    from core.migrations import required_version
    from core.settings import ApiSettings, ExpressionLimits
    settings = ApiSettings(max_wait=7, max_batch=50, limits=ExpressionLimits(max_expression_length=99))
    app = create_app({"DATABASE_URL": api_url, "SETTINGS": settings})
    try:
        client = app.test_client()
        doc = client.get("/api/openapi.json").json
        wait = [p for p in doc["paths"]["/api/result/{expression_id}"]["get"]["parameters"] if p["name"] == "wait"]
        assert wait[0]["schema"]["maximum"] == 7
        assert client.get("/api/result/1?wait=7.5").status_code == 400
        bulk = doc["paths"]["/api/expressions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert bulk["properties"]["items"]["maxItems"] == 50
        assert doc["components"]["schemas"]["Submission"]["properties"]["expression"]["maxLength"] == 99
        ready = doc["paths"]["/readyz"]["get"]["responses"]["200"]["content"]["application/json"]["example"]
        assert ready["schema_version"] == required_version() == client.get("/readyz").json["schema_version"]
    finally:
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()


def test_submissions_through_the_api_wake_the_calculators(client, db, database_url):
    import psycopg
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_inserted")
        assert client.post("/api/expression", json={"expression": "1"}).status_code == 202
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1
        assert client.post("/api/expressions", json={"items": [{"expression": "1"}]}).status_code == 202
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1


@pytest.mark.parametrize("expression, message", [
    ("1 /* \x00 */", "the expression contains a NUL character at column 6"),
    ("1 /* \ud800 */", "the expression contains an invalid character (a lone surrogate) at column 6"),
])
def test_nul_and_lone_surrogates_are_a_400_in_bulk_too(client, db, expression, message):
    body = '{"items": [{"expression": "1"}, {"expression": %s}]}' % json.dumps(expression)
    response = client.post("/api/expressions", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json["errors"] == [{"index": 1, "msg": message}]
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


def test_a_refused_json_constant_is_named_once(client, db):
    response = client.post("/api/expression", data='{"expression": "x", "variables": {"x": NaN}}',
                           content_type="application/json")
    assert response.status_code == 400
    assert response.json["msg"] == "malformed JSON: NaN is not a valid JSON number"


def test_a_bulk_read_of_an_id_past_the_largest_bigint_says_unknown(client, db):
    task_id = insert(db, "1")
    response = client.get(f"/api/results?ids={task_id},9223372036854775808")
    assert response.status_code == 200
    assert response.json["results"] == [
        {"expression_id": task_id, "status": "pending"},
        {"expression_id": 9223372036854775808, "status": "unknown",
         "msg": "no expression with id 9223372036854775808"}]
    assert client.get("/api/results?ids=" + "9" * 50).status_code == 400


def test_a_submission_commits_before_its_notify_in_the_same_round_trip(database_url, db):
    """The pipeline in POST /api/expression: the INSERT and the NOTIFY after it
    are two transactions (the NOTIFY must not hold its lock over the insert's
    commit, see sql/004), though sent together."""
    import psycopg
    from api.db import end_transaction
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.pipeline() as pipeline:
            first = conn.execute("SELECT txid_current()")
            end_transaction(pipeline)
            second = conn.execute("SELECT txid_current()")
        assert first.fetchone() != second.fetchone()


def test_a_psql_row_with_a_huge_number_is_read_not_a_500(client, db):
    """Found by an outside test: rows written with psql may hold integers past
    Python's 4,300-digit str limit, in a result or in the variables."""
    done = db.execute("INSERT INTO tasks (expression, status, result, finished_at) VALUES "
                      "('10**4999', 'done', ('1' || repeat('0', 4999))::jsonb, now()) RETURNING id"
                      ).fetchone()[0]
    odd = db.execute("INSERT INTO tasks (expression, variables) VALUES "
                     "('x', ('{\"x\": ' || repeat('9', 4301) || '}')::jsonb) RETURNING id").fetchone()[0]
    response = client.get(f"/api/result/{done}")
    assert response.status_code == 200 and response.json["result"] == 10**4999
    response = client.get(f"/api/results?ids={done},{odd}")
    assert response.status_code == 200
    assert [r["status"] for r in response.json["results"]] == ["done", "pending"]
    for path in ("/", "/dashboard/tasks", f"/dashboard/task/{done}", f"/dashboard/task/{odd}"):
        assert client.get(path).status_code == 200, path
