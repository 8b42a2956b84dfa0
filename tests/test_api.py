"""The HTTP API's contract: what it accepts, what it answers, every 4xx."""

from __future__ import annotations

import json

import pytest

from tests.support import outcome


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/api/expression", data=data, content_type=content_type)


def test_submit_returns_an_id_and_location(client, db):
    response = post(client, {"expression": "x*t**y", "variables": {"x": 10, "y": 1, "t": 11}})
    assert response.status_code == 202
    task_id = response.json["expression_id"]
    assert response.headers["Location"] == f"/api/result/{task_id}"
    row = db.execute("SELECT expression, variables, status FROM tasks WHERE id = %s", (task_id,))
    assert row.fetchone() == ("x*t**y", {"x": 10, "y": 1, "t": 11}, "pending")


def test_variables_may_be_omitted_when_there_are_none(client, db):
    response = post(client, {"expression": "2+2"})
    assert response.status_code == 202
    assert db.execute("SELECT variables FROM tasks").fetchone()[0] == {}


@pytest.mark.parametrize("written, stored", [
    ("123.456e2", 12345.6), ("2.0", 2.0), ("0.1", 0.1), ("1e-300", 1e-300),
    # what jsonb makes of them, so the API and psql agree (core/numbers.py)
    ("1e300", 10**300), ("1.5e300", 15 * 10**299), ("1.5e1", 15), ("7", 7),
])
def test_variables_are_stored_as_jsonb_keeps_them(client, db, written, stored):
    response = client.post("/api/expression", data='{"expression": "x", "variables": {"x": %s}}'
                           % written, content_type="application/json")
    value = db.execute("SELECT variables->'x' FROM tasks WHERE id = %s",
                       (response.json["expression_id"],)).fetchone()[0]
    assert value == stored and type(value) is type(stored)
    psql = db.execute("SELECT (%s::text)::jsonb", (written,)).fetchone()[0]
    assert psql == value and type(psql) is type(value)


@pytest.mark.parametrize("status, result, error, code, body", [
    ("pending", None, None, 202, {"status": "pending"}),
    ("done", "110", None, 200, {"status": "done", "result": 110}),
    ("done", "2.5", None, 200, {"status": "done", "result": 2.5}),
    ("done", "true", None, 200, {"status": "done", "result": True}),
    ("error", None, "division by zero", 200, {"status": "error", "msg": "division by zero"}),
])
def test_result_reports_each_status(client, db, status, result, error, code, body):
    task_id = db.execute(
        "INSERT INTO tasks (expression, status, result, error, finished_at) "
        "VALUES ('1', %s, %s::jsonb, %s, CASE WHEN %s <> 'pending' THEN now() END) RETURNING id",
        (status, result, error, status)).fetchone()[0]
    response = client.get(f"/api/result/{task_id}")
    assert response.status_code == code
    assert response.json == {"expression_id": task_id, **body}


def test_big_integers_come_back_exact(client, db):
    big = str(2**200)
    task_id = db.execute("INSERT INTO tasks (expression, status, result, finished_at) "
                         "VALUES ('2**200', 'done', %s::jsonb, now()) RETURNING id", (big,)).fetchone()[0]
    response = client.get(f"/api/result/{task_id}")
    assert response.get_data(as_text=True).count(big) == 1
    assert response.json["result"] == 2**200


@pytest.mark.parametrize("path, code, msg", [
    ("/api/result/12345", 404, "no expression with id 12345"),
    ("/api/result/abc", 400, "expression id must be a positive integer, not 'abc'"),
    ("/api/result/-1", 400, "must be a positive integer"),
    ("/api/result/0", 400, "must be a positive integer"),
    ("/api/result/1.5", 400, "must be a positive integer"),
    ("/api/result/" + "9" * 30, 404, "no expression with id"),
    ("/api/result/%C2%B2", 400, "must be a positive integer"),
    ("/api/nothing", 404, "no such endpoint: /api/nothing"),
    ("/api/result//0", 404, "no such endpoint"),  # found by the fuzzer: was an HTML redirect
    ("/api/result/", 404, "no such endpoint"),
])
def test_bad_result_ids(client, db, path, code, msg):
    response = client.get(path)
    assert response.status_code == code
    assert msg in response.json["msg"]


@pytest.mark.parametrize("body, code, msg", [
    ('{"expression": "1+"', 400, "malformed JSON"),
    ("", 400, "malformed JSON"),
    ('{"expression": NaN}', 400, "malformed JSON: NaN is not a valid JSON number"),
    ('{"expression": "x", "variables": {"x": Infinity}}', 400, "Infinity is not a valid JSON number"),
    ('{"expression": "x", "variables": {"x": -Infinity}}', 400, "-Infinity is not a valid JSON number"),
    ('{"expression": "x", "variables": {"x": 1e-400}}', 400, "variable 'x' is too small: it would be 0"),
    ('{"expression": "x", "variables": {"x": 1e1001}}', 400, "variable 'x' is too large: more than 1000 digits"),
    ('{"expression": "x", "variables": {"x": ' + "1" * 5000 + "}}", 400,
     "variable 'x' is too large: more than 1000 digits"),
    ('{"expression": "sin*2", "variables": {"sin": 1}}', 400, "'sin' is a reserved name"),
    ('{"expression": "1 /* \\u0000 */"}', 400, "the expression contains a NUL character at column 6"),
    ('{"expression": "1 /* \\ud800 */"}', 400, "the expression contains an invalid character"),
    ("[1, 2]", 400, "the body must be a JSON object, not an array"),
    ('"2+2"', 400, "the body must be a JSON object, not a string"),
    ("{}", 400, "missing key(s): expression"),
    ('{"expression": "1", "extra": 1}', 400, "unknown key(s): extra"),
    ('{"expression": 5}', 400, "'expression' must be a string, not a number"),
    ('{"expression": "1", "variables": []}', 400, "'variables' must be an object, not an array"),
    ('{"expression": "x", "variables": {"x": "10"}}', 400, "variable 'x' must be a number, not a string"),
    ('{"expression": "x", "variables": {"x": true}}', 400, "variable 'x' must be a number, not a boolean"),
    ('{"expression": "x + y", "variables": {"x": 1}}', 400, "missing values for y"),
    ('{"expression": "x", "variables": {"x": 1, "z": 2}}', 400, "unused variables z"),
    ('{"expression": "x +* 1", "variables": {"x": 1}}', 400,
     "parse error at column 4: an operand is missing before '*'"),
    ('{"expression": "(1", "variables": {}}', 400, "this '(' is never closed"),
    ('{"expression": "sin(x)", "variables": {"sin": 1, "x": 1}}', 400, "'sin' is a reserved name"),
    ('{"expression": "PI * 2", "variables": {"PI": 3}}', 400, "'PI' is a reserved name"),
    ('{"expression": "\'a\' || \'b\'"}', 400, "unknown character"),
    ('{"expression": ""}', 400, "expression is empty"),
    ('{"expression": "' + "1+" * 6000 + '1"}', 400, "expression is too long"),
])
def test_bad_submissions_get_a_clear_400(client, db, body, code, msg):
    response = post(client, body)
    assert response.status_code == code, response.json
    assert msg in response.json["msg"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


def test_invalid_utf8_is_refused(client, db):
    response = post(client, b'{"expression": "\xff"}')
    assert response.status_code == 400
    assert response.json["msg"] == "malformed JSON: the body is not valid UTF-8"


def test_deeply_nested_json_is_refused(client, db):
    response = post(client, '{"expression": "1", "variables": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert response.status_code == 400
    assert response.json["msg"] == "malformed JSON: nested too deeply"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_refused(client, db, content_type):
    response = post(client, '{"expression": "1"}', content_type=content_type)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json["msg"]


def test_body_size_is_limited(app, client, db):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = post(client, {"expression": "1", "variables": {}, "pad": "x" * 2000})
    assert response.status_code == 413
    assert response.json["msg"] == "request body too large: the limit is 1000 bytes"


def test_wrong_method_is_json_too(client, db):
    response = client.get("/api/expression")
    assert response.status_code == 405
    assert response.json == {"msg": "method GET is not allowed here; use POST"}
    assert "POST" in response.headers["Allow"]


def test_sql_injection_is_plain_data(client, db):
    nasty = "1 + 1 -- '); DROP TABLE tasks; --"
    response = post(client, {"expression": nasty})
    # The comment is not ours to interpret: the parser refuses or accepts it,
    # and either way it is stored verbatim, never executed.
    if response.status_code == 202:
        task_id = response.json["expression_id"]
        assert outcome(db, task_id)[0] == "pending"
        assert db.execute("SELECT expression FROM tasks").fetchone()[0] == nasty
    else:
        assert response.status_code == 400
    assert db.execute("SELECT to_regclass('tasks') IS NOT NULL").fetchone()[0]


def test_health_and_readiness(client, db):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready"


def test_an_unexpected_error_is_a_json_500_without_details(app, db):
    def broken():
        raise RuntimeError("secret internals")
    app.add_url_rule("/broken", view_func=broken)
    response = app.test_client().get("/broken")
    assert response.status_code == 500
    assert response.json == {"msg": "internal error"}
