"""GET /api/results?ids=...&wait=S: one wait for many tasks."""

from __future__ import annotations

import threading
import time

from tests.http_client import request
from tests.support import insert, wait_for


def finish(db, task_id: int, result: str = "4") -> None:
    """Store an outcome and announce it as a Calculator's store does (sql/queries/store_results.sql)."""
    with db.transaction():
        db.execute("UPDATE tasks SET status = 'done', result = %s::jsonb, finished_at = now() WHERE id = %s",
                   (result, task_id))
        db.execute("SELECT pg_notify('results_stored', %s)", (str(task_id),))


def ask_in_background(http_server, path: str) -> tuple[threading.Thread, dict]:
    answer: dict = {}

    def ask():
        status, _, body = request(http_server, "GET", path)
        answer.update(status=status, body=body, at=time.monotonic())

    thread = threading.Thread(target=ask)
    thread.start()
    return thread, answer


def test_it_answers_when_the_last_one_is_finished_and_not_before(db, http_server, app):
    first, second, last = (insert(db, f"{n}+{n}") for n in (1, 2, 3))
    waiter = app.extensions["result_waiter"]
    thread, answer = ask_in_background(http_server, f"/api/results?ids={first},{second},{last},99&wait=30")
    wait_for(lambda: waiter.waiting_count() == 1, message="one waiting request for three ids")
    finish(db, first)
    finish(db, second)
    # Woken by each store, the request reads the list again and waits on:
    # had it answered, the last task would be pending in its answer.
    wait_for(lambda: db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone() == (1,))
    assert thread.is_alive() and waiter.waiting_count() == 1
    finish(db, last, "6")
    stored_at = time.monotonic()
    thread.join(30)
    assert answer["status"] == 200
    assert answer["body"]["results"] == [
        {"expression_id": first, "status": "done", "result": 4},
        {"expression_id": second, "status": "done", "result": 4},
        {"expression_id": last, "status": "done", "result": 6},
        {"expression_id": 99, "status": "unknown", "msg": "no expression with id 99"}]
    assert answer["at"] - stored_at < 15, "answered on the store, long before its 30 s deadline"
    assert waiter.waiting_count() == 0


def test_at_its_deadline_it_answers_with_what_is_finished(db, http_server):
    done, waiting = insert(db, "1+1"), insert(db, "2+2")
    finish(db, done, "2")
    started = time.monotonic()
    status, _, body = request(http_server, "GET", f"/api/results?ids={done},{waiting}&wait=0.3")
    assert time.monotonic() - started >= 0.3
    assert (status, body["results"]) == (200, [
        {"expression_id": done, "status": "done", "result": 2},
        {"expression_id": waiting, "status": "pending"}])


def test_nothing_pending_answers_at_once_and_wait_has_the_same_limits(client, db):
    done = insert(db, "1+1")
    finish(db, done, "2")
    assert client.get(f"/api/results?ids={done}&wait=30").json["results"][0]["status"] == "done"
    too_long = client.get(f"/api/results?ids={done}&wait=31")
    assert (too_long.status_code, too_long.json["msg"]) == (
        400, "wait must be a number of seconds from 0 to 30, not '31'")
    assert client.get(f"/api/results?ids={done}&wait=nan").status_code == 400
