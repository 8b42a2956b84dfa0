"""Cancellation: POST /api/result/<id>/cancel, the bulk form, cancel_tasks()
from psql, and what the Calculator does with a cancelled task."""

from __future__ import annotations

import threading
import time

import psycopg

from tests.http_client import request
from tests.support import insert, outcome, wait_done, wait_for
from tests.test_retention import MAINTAIN, finished
from worker.task_queue import Outcome, claim_tasks, extend_leases, release_tasks, store_results

RUNAWAY = "9**(9**9)"


def test_a_queued_task_cancelled_is_never_evaluated(client, db, calculators):
    task_id = insert(db, "6*7")
    response = client.post(f"/api/result/{task_id}/cancel")
    assert (response.status_code, response.json) == (200, {"expression_id": task_id, "status": "cancelled"})
    calc = calculators()
    wait_done(db, [insert(db, "1")])  # the Calculator has polled the queue since
    calc.stop()
    assert db.execute("SELECT status, attempts, result, error FROM tasks WHERE id = %s",
                      (task_id,)).fetchone() == ("cancelled", 0, None, None)
    assert f"ids={task_id}" not in calc.log()
    assert client.get(f"/api/result/{task_id}").json == {"expression_id": task_id, "status": "cancelled"}
    assert client.get(f"/api/results?ids={task_id}").json["results"] == [
        {"expression_id": task_id, "status": "cancelled"}]
    assert client.get("/api/stats").json["outcomes"] == {"done": 1, "error": 0, "cancelled": 1}
    again = client.post(f"/api/result/{task_id}/cancel")
    assert (again.status_code, again.json["status"]) == (200, "cancelled"), "cancelling twice is harmless"


def test_a_running_runaway_is_killed_within_a_second_and_never_gets_an_outcome(client, db, calculators):
    calc = calculators(calculation_timeout=60, num_processes=1)
    task_id = insert(db, RUNAWAY)
    busy = wait_for(lambda: calc.busy_evaluator_pids(), timeout=15, message="the runaway to be running")
    assert client.post(f"/api/result/{task_id}/cancel").status_code == 200
    wait_for(lambda: busy[0] not in calc.evaluator_pids(), timeout=5, message="its process to be killed")
    # At once, on the notification (not by the check every second): the log says which.
    assert f"cancelled ids={task_id}: dropped (notified)" in calc.log()
    wait_for(lambda: len(calc.evaluator_pids()) == 1, message="a replacement process")
    quick = insert(db, "6*7")
    assert wait_done(db, [quick])[quick] == ("done", 42, None), "the Calculator goes on with a new process"
    assert outcome(db, task_id) == ("cancelled", None, None)
    assert "killing its evaluation process" in calc.log()
    assert "discarded stale results" not in calc.log()


def test_a_missed_notification_is_made_up_for_by_the_check_every_second(db, calculators):
    calc = calculators(calculation_timeout=60, num_processes=1)
    task_id = insert(db, RUNAWAY)
    busy = wait_for(lambda: calc.busy_evaluator_pids(), timeout=15, message="the runaway to be running")
    # Cancelled without cancel_tasks(): no notification.
    db.execute("UPDATE tasks SET status = 'cancelled', finished_at = now() WHERE id = %s", (task_id,))
    wait_for(lambda: busy[0] not in calc.evaluator_pids(), timeout=5, message="its process to be killed")
    assert f"cancelled ids={task_id}: dropped (found by the check every second)" in calc.log()
    assert outcome(db, task_id) == ("cancelled", None, None)


def test_cancelling_a_finished_an_unknown_or_an_expired_task(client, db):
    done = finished(db, "1 minute")
    expired = finished(db, "8 days")
    db.execute(MAINTAIN, ("7 days", 100))
    response = client.post(f"/api/result/{done}/cancel")
    assert (response.status_code, response.json) == (
        409, {"msg": f"expression {done} already finished (done): it cannot be cancelled"})
    assert outcome(db, done) == ("done", 2, None)
    assert client.post(f"/api/result/{done + 100}/cancel").status_code == 404
    response = client.post(f"/api/result/{expired}/cancel")
    assert (response.status_code, response.json) == (
        410, {"msg": f"expression {expired} expired: results are kept for 7 days"})
    assert client.post("/api/result/abc/cancel").status_code == 400
    assert client.delete(f"/api/result/{done}").status_code == 405


def test_bulk_cancel_by_ids(client, db):
    expired = finished(db, "2 days")
    db.execute(MAINTAIN, ("1 day", 100))
    pending = [insert(db, "1"), insert(db, "2")]
    done = finished(db, "1 minute")
    response = client.post("/api/results/cancel",
                           json={"ids": [pending[1], done, 999, expired, pending[0], 2**63]})
    assert response.status_code == 200
    assert response.json == {"results": [
        {"expression_id": pending[1], "status": "cancelled", "cancelled": True},
        {"expression_id": done, "status": "done", "cancelled": False,
         "msg": "already finished (done): not cancelled"},
        {"expression_id": 999, "status": "unknown", "cancelled": False, "msg": "no expression with id 999"},
        {"expression_id": expired, "status": "expired", "cancelled": False,
         "msg": f"expression {expired} expired: results are kept for 1 day"},
        {"expression_id": pending[0], "status": "cancelled", "cancelled": True},
        {"expression_id": 2**63, "status": "unknown", "cancelled": False,   # as GET /api/results says
         "msg": f"no expression with id {2**63}"},
    ]}
    for body, msg in [({"ids": []}, "'ids' must hold 1 to 1000 ids, not 0"),
                      ({"ids": "1,2"}, "'ids' must be an array, not a string"),
                      ({"ids": [1, True]}, "an id must be a positive integer, not true"),
                      ({"ids": ["1"]}, 'an id must be a positive integer, not "1"'),
                      ({"ids": [0]}, "an id must be a positive integer, not 0"),
                      ({"ids": [1.5]}, "an id must be a positive integer, not 1.5"),
                      ({"ids": [1e2]}, "an id must be a positive integer, not 100.0"),
                      ({"id": [1]}, "missing key(s): ids")]:
        response = client.post("/api/results/cancel", json=body)
        assert (response.status_code, response.json) == (400, {"msg": msg}), body


def test_a_waiting_reader_is_woken_by_the_cancel(client, db, http_server):
    task_id = insert(db, "1")
    answers = {}
    waiter = client.application.extensions["result_waiter"]
    waiter.unregister(0, waiter.register(0))  # starts the listener
    wait_for(lambda: waiter.listening, message="the result listener to listen")
    thread = threading.Thread(target=lambda: answers.update(
        response=request(http_server, "GET", f"/api/result/{task_id}?wait=30")))
    thread.start()
    wait_for(lambda: waiter.waiting_count() >= 1, message="the request to be waiting")
    # While the listener listens, a waiter re-reads its row only when woken
    # (api/result_waiter.py): an answer long before ?wait=30 runs out is the
    # notification's doing, whatever the machine's speed.
    assert waiter.listening
    client.post(f"/api/result/{task_id}/cancel")
    thread.join(15)
    assert not thread.is_alive(), "not woken by the cancel"
    assert waiter.listening, "the listener never stopped: no fallback re-read happened"
    assert answers["response"][0] == 200 and answers["response"][2]["status"] == "cancelled"


def test_the_fence_holds_a_late_result_for_a_cancelled_task_is_discarded(db, worker_url, api_url):
    task_id = insert(db, "6*7")
    with psycopg.connect(worker_url, autocommit=True) as worker, \
            psycopg.connect(api_url, autocommit=True) as api:
        (task,), _ = claim_tasks(worker, 10, 30, 5)
        assert api.execute("SELECT status, cancelled_now FROM cancel_tasks(%s)",
                           ([task_id],)).fetchone() == ("cancelled", True)
        extend_leases(worker, [task], 30)
        assert release_tasks(worker, [task], count_attempt=False) == set()
        assert store_results(worker, [Outcome(task, "42", None)]) == set()
        assert claim_tasks(worker, 10, 30, 5) == ([], [])
    assert outcome(db, task_id) == ("cancelled", None, None)


def test_cancel_from_psql_notifies_the_calculators(db, database_url):
    task_id = insert(db, "1")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_cancelled")
        rows = db.execute("SELECT * FROM cancel_tasks(ARRAY[%s, %s])", (task_id, task_id + 1)).fetchall()
        assert rows == [(task_id, "cancelled", True), (task_id + 1, "unknown", False)]
        assert [n.payload for n in listener.notifies(timeout=2, stop_after=1)] == [str(task_id)]


def test_the_dashboard_offers_cancel_for_pending_tasks_and_its_request_is_served(client, db):
    pending, done = insert(db, "1"), finished(db, "1 minute")
    html = client.get("/").get_data(as_text=True)
    assert 'data-cancel-url="/api/result/{id}/cancel"' in html
    assert f'button type="button" class="cancel" data-id="{pending}"' in html
    assert f'class="cancel" data-id="{done}"' not in html
    # What api/static/dashboard.js sends, from the page's own origin.
    response = client.post(f"/api/result/{pending}/cancel", data="{}", content_type="application/json",
                           headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert (response.status_code, response.json["status"]) == (200, "cancelled")
