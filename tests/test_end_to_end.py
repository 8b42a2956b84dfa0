"""The README's example, over real HTTP, with a real Calculator."""

from __future__ import annotations

from tests.support import insert, wait_for
from tests.http_client import post_json, request


def poll_result(base_url: str, task_id: int):
    def finished():
        status, _, body = request(base_url, "GET", f"/api/result/{task_id}")
        return (status, body) if status != 202 else None
    return wait_for(finished, timeout=20, message=f"result {task_id}")


def test_the_readme_example(http_server, calculators):
    calculators()
    status, headers, body = post_json(http_server, "/api/expression",
                                      {"expression": "x*t**y", "variables": {"x": 10, "y": 1, "t": 11}})
    assert status == 202
    task_id = body["expression_id"]
    assert headers["Location"] == f"/api/result/{task_id}"
    assert poll_result(http_server, task_id) == \
        (200, {"expression_id": task_id, "status": "done", "result": 110})


def test_a_psql_task_is_readable_over_http(db, http_server, calculators):
    calculators()
    task_id = insert(db, "1/0")
    assert poll_result(http_server, task_id) == \
        (200, {"expression_id": task_id, "status": "error", "msg": "division by zero"})


def test_pending_then_done(db, http_server):
    task_id = insert(db, "2+2")
    status, _, body = request(http_server, "GET", f"/api/result/{task_id}")
    assert (status, body) == (202, {"expression_id": task_id, "status": "pending"})


def test_errors_are_json_over_http_too(http_server):
    for method, path, body in [("GET", "/nowhere", None), ("DELETE", "/api/result/1", None),
                               ("POST", "/api/expression", "not json")]:
        status, headers, payload = request(http_server, method, path, body,
                                           {"Content-Type": "application/json"})
        assert 400 <= status < 500
        assert headers["Content-Type"] == "application/json"
        assert isinstance(payload, dict) and payload["msg"]
