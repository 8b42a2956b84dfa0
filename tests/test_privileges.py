"""Least privilege: what each service's role may and may not do.

(The rest of the suite already runs the API and the Calculators with these
roles, which shows the grants are enough.)"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import insert


API_MAY_NOT = [
    "UPDATE tasks SET status = 'done', result = '1', finished_at = now()",
    "UPDATE tasks SET expression = '6*7'",
    "DELETE FROM tasks",
    "TRUNCATE tasks",
    "INSERT INTO tasks (expression, status, error, finished_at) VALUES ('1', 'error', 'forged', now())",
    "DROP TABLE tasks",
    "SELECT tasks_maintenance(interval '1 second', 10)",
    "SELECT recount_tasks()",
    "UPDATE task_retention SET purged_through = 99",
    "DELETE FROM task_counts",
    "UPDATE tasks SET status = 'cancelled', finished_at = now()",
    "TRUNCATE idempotency_keys",
    "DROP TABLE idempotency_keys",
]
WORKER_MAY_NOT = [
    "INSERT INTO tasks (expression) VALUES ('1')",
    "UPDATE tasks SET expression = '6*7'",
    "UPDATE tasks SET variables = '{\"x\": 1}'",
    "DELETE FROM tasks",
    "DROP TABLE tasks",
    "SELECT * FROM cancel_tasks('{1}')",
    "SELECT recount_tasks()",
    "UPDATE task_retention SET purged_through = 99",
    "INSERT INTO task_counts VALUES (now(), 'done', 0, 1000)",
    "SELECT purged_through FROM task_retention",
    "SELECT * FROM idempotency_keys",
    "INSERT INTO idempotency_keys (key, fingerprint, expression_ids) VALUES ('k', sha256(''), '{1}')",
]


@pytest.mark.parametrize("role_url, statement",
                         [("api_url", s) for s in API_MAY_NOT] + [("worker_url", s) for s in WORKER_MAY_NOT])
def test_each_role_is_refused_what_it_does_not_need(db, request, role_url, statement):
    insert(db, "1+1")
    with psycopg.connect(request.getfixturevalue(role_url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_the_api_role_can_submit_and_read(db, api_url):
    with psycopg.connect(api_url, autocommit=True) as conn:
        task_id = conn.execute("INSERT INTO tasks (expression, variables) VALUES ('2', '{}') "
                               "RETURNING id").fetchone()[0]
        assert conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone() == ("pending",)


FINISHED_ROW_CHANGES = [
    "UPDATE tasks SET status = 'pending', result = NULL, error = NULL, finished_at = NULL",
    "UPDATE tasks SET result = '5'",
    "UPDATE tasks SET status = 'error', result = NULL, error = 'forged'",
    # the row as a whole (migration 009)
    "UPDATE tasks SET expression = '1+1'",
    "UPDATE tasks SET variables = '{\"x\": 1}'",
    "UPDATE tasks SET finished_at = finished_at - interval '30 days'",
    "UPDATE tasks SET created_at = created_at - interval '30 days'",
]


@pytest.mark.parametrize("role_url", ["database_url", "worker_url", "api_url"])
@pytest.mark.parametrize("statement", FINISHED_ROW_CHANGES)
def test_a_finished_tasks_outcome_cannot_be_changed_by_any_role(db, request, role_url, statement):
    """The database, not only the store query, keeps "one outcome, ever";
    the schema owner is refused too."""
    task_id = insert(db, "2+2")
    db.execute("UPDATE tasks SET status = 'done', result = '4', finished_at = now() WHERE id = %s",
               (task_id,))
    with psycopg.connect(request.getfixturevalue(role_url), autocommit=True) as conn:
        with pytest.raises((psycopg.errors.RestrictViolation, psycopg.errors.InsufficientPrivilege)) as refused:
            conn.execute(statement + " WHERE id = %s", (task_id,))
    # The owner meets the trigger; the roles meet it or, for columns they may
    # not update at all, their privileges.
    if role_url == "database_url" or isinstance(refused.value, psycopg.errors.RestrictViolation):
        assert "is finished (done): its outcome cannot be changed" in str(refused.value)
    assert db.execute("SELECT status, result, error FROM tasks").fetchone() == ("done", 4, None)


def test_a_pending_task_may_still_be_finished_and_a_finished_one_deleted(db):
    task_id = insert(db, "2+2")
    db.execute("UPDATE tasks SET status = 'error', error = 'x', finished_at = now() WHERE id = %s",
               (task_id,))
    db.execute("UPDATE tasks SET process_at = now() WHERE id = %s", (task_id,))  # not the outcome
    db.execute("DELETE FROM tasks WHERE id = %s", (task_id,))  # retention may delete
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


def test_the_api_role_can_cancel_and_read_the_counters_and_retention(db, api_url):
    task_id = insert(db, "1+1")
    with psycopg.connect(api_url, autocommit=True) as conn:
        assert conn.execute("SELECT status FROM cancel_tasks(%s)", ([task_id],)).fetchone() == ("cancelled",)
        assert conn.execute("SELECT sum(n) FROM task_counts WHERE status = 'cancelled'").fetchone() == (1,)
        assert conn.execute("SELECT status FROM task_outcomes(%s)", ([task_id],)).fetchone() == ("cancelled",)
        conn.execute("SELECT purged_through FROM task_retention").fetchone()


def test_the_worker_role_can_delete_old_finished_tasks_only_through_the_maintenance(db, worker_url):
    old, pending = insert(db, "1"), insert(db, "2")
    db.execute("UPDATE tasks SET status = 'done', result = '1', finished_at = now() - interval '2 days' "
               "WHERE id = %s", (old,))
    db.execute("UPDATE tasks SET created_at = now() - interval '9 days' WHERE id = %s", (pending,))
    with psycopg.connect(worker_url, autocommit=True) as conn:
        assert conn.execute("SELECT tasks_maintenance(interval '1 day', 10)").fetchone() == (1,)
    assert [row[0] for row in db.execute("SELECT id FROM tasks")] == [pending]


@pytest.mark.parametrize("finished, statement", [
    ("error", "UPDATE tasks SET error = 'forged'"),           # the message alone, on an error row
    ("error", "UPDATE tasks SET id = id + 1000"),
    ("done", "UPDATE tasks SET id = id + 1000"),              # any finished row's id
    ("cancelled", "UPDATE tasks SET id = id + 1000"),
])
def test_an_error_row_s_message_and_a_finished_row_s_id_are_final(db, finished, statement):
    """Each column the trigger (sql/009, sql/010) guards, changed alone, by
    the schema owner (whom no privilege stops: only the trigger)."""
    task_id = insert(db, "1/0")
    db.execute("UPDATE tasks SET status = %s, error = CASE WHEN %s = 'error' THEN 'division by zero' END, "
               "result = CASE WHEN %s = 'done' THEN '1'::jsonb END, finished_at = now() WHERE id = %s",
               (finished, finished, finished, task_id))
    before = db.execute("SELECT id, status, result, error FROM tasks").fetchall()
    with pytest.raises(psycopg.errors.RestrictViolation, match=f"is finished \\({finished}\\)"):
        db.execute(statement + " WHERE id = %s", (task_id,))
    assert db.execute("SELECT id, status, result, error FROM tasks").fetchall() == before
