"""Idempotency-Key on submissions: a retried POST creates nothing new."""

from __future__ import annotations

import json
import threading

import pytest

from tests.http_client import request

SUBMISSION = {"expression": "x + 1", "variables": {"x": 1}}


def task_count(db) -> int:
    return db.execute("SELECT count(*) FROM tasks").fetchone()[0]


def post(client, path, payload, key):
    return client.post(path, json=payload, headers={"Idempotency-Key": key})


def test_the_same_key_and_body_twice_creates_one_task(client, db):
    first = post(client, "/api/expression", SUBMISSION, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    again = post(client, "/api/expression", dict(reversed(SUBMISSION.items())),
                 '"8e03978e-40d5-43e8-bc93-6894a57f9324"')  # the draft's sf-string form, keys reordered
    assert first.status_code == again.status_code == 202
    assert first.json == again.json
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert task_count(db) == 1


def test_the_same_key_with_another_body_is_refused_with_422(client, db):
    assert post(client, "/api/expression", SUBMISSION, "k-1").status_code == 202
    other = post(client, "/api/expression", {"expression": "x + 2", "variables": {"x": 1}}, "k-1")
    assert other.status_code == 422
    assert "already used with a different request" in other.json["msg"]
    # Same body on the other endpoint is another request too.
    assert post(client, "/api/expressions", {"items": [SUBMISSION]}, "k-1").status_code == 422
    assert task_count(db) == 1


def test_bulk_submissions_are_idempotent_too(client, db):
    items = {"items": [{"expression": f"{i} * 2"} for i in range(5)]}
    first = post(client, "/api/expressions", items, "bulk-1")
    again = post(client, "/api/expressions", items, "bulk-1")
    assert first.status_code == again.status_code == 202
    assert first.json == again.json and len(first.json["expression_ids"]) == 5
    assert task_count(db) == 5


def test_without_a_key_every_post_creates_a_task(client, db):
    for _ in range(2):
        assert client.post("/api/expression", json=SUBMISSION).status_code == 202
    assert task_count(db) == 2


def test_a_key_older_than_a_day_may_be_used_afresh(client, db):
    first = post(client, "/api/expression", SUBMISSION, "old-key")
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    again = post(client, "/api/expression", {"expression": "2+2"}, "old-key")
    assert again.status_code == 202 and again.json != first.json
    assert task_count(db) == 2


@pytest.mark.parametrize("key", ["", "é", "a" * 256, "two\"quotes\""])
def test_a_malformed_key_is_refused(client, db, key):
    response = client.post("/api/expression", json=SUBMISSION,
                           headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert response.status_code == 400
    assert "Idempotency-Key must be 1 to 255 printable ASCII characters" in response.json["msg"]
    assert task_count(db) == 0


def test_concurrent_duplicates_create_one_task(http_server, db):
    start = threading.Barrier(20)
    answers = []
    lock = threading.Lock()

    def submit():
        start.wait(10)
        answer = request(http_server, "POST", "/api/expression", json.dumps(SUBMISSION),
                         {"Content-Type": "application/json", "Idempotency-Key": "race"})
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 20
    assert len({(status, body["expression_id"]) for status, _, body in answers}) == 1
    assert answers[0][0] == 202
    assert task_count(db) == 1
    assert sum(1 for _, headers, _ in answers if "Idempotent-Replayed" not in headers) == 1
