"""What the service says about rows written from psql must be true:
the 410 message names the retention that deleted a result, or no figure, and a
new task cannot be inserted as if it had been claimed before."""

from __future__ import annotations

import psycopg
import pytest

from tests.support import insert, wait_done
from tests.test_retention import MAINTAIN, finished


def message(client, task_id) -> str:
    response = client.get(f"/api/result/{task_id}")
    assert response.status_code == 410
    return response.json["msg"]


def test_the_410_message_names_the_retention_that_deleted_the_result(client, db):
    by_psql = finished(db, "1 minute")
    assert db.execute(MAINTAIN, ("1 second", 100)).fetchone() == (1,)   # the README's psql recipe
    assert message(client, by_psql) == f"expression {by_psql} expired: results are kept for 1 second"
    # The Calculator's next maintenance, with RESULT_RETENTION=7d, deletes nothing: still 1 second.
    assert db.execute(MAINTAIN, ("7 days", 100)).fetchone() == (0,)
    assert message(client, by_psql) == f"expression {by_psql} expired: results are kept for 1 second"
    # Another retention deletes too: the ids expired under two, so no figure.
    by_calculator = finished(db, "8 days")
    assert db.execute(MAINTAIN, ("7 days", 100)).fetchone() == (1,)
    for task_id in (by_psql, by_calculator):
        assert message(client, task_id) == (f"expression {task_id} expired: "
                                            "its result was deleted by the retention of finished results")


def test_one_retention_throughout_keeps_its_figure(client, db):
    first, second = finished(db, "9 days"), finished(db, "8 days")
    db.execute(MAINTAIN, ("7 days", 1))
    db.execute(MAINTAIN, ("7 days", 1))
    for task_id in (first, second):
        assert message(client, task_id) == f"expression {task_id} expired: results are kept for 7 days"


@pytest.mark.parametrize("attempts", [1, 1000, -1])
def test_a_new_pending_task_cannot_be_inserted_with_attempts(db, attempts):
    with pytest.raises(psycopg.errors.CheckViolation, match=f"a new task starts with attempts = 0, not {attempts}"):
        db.execute("INSERT INTO tasks (expression, attempts) VALUES ('2+2', %s)", (attempts,))
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


def test_history_may_carry_its_attempts_and_a_new_task_is_evaluated(db, calculators):
    """A finished row inserted as history keeps its count; a pending one
    without attempts is evaluated, not given up."""
    db.execute("INSERT INTO tasks (expression, status, result, finished_at, attempts) "
               "VALUES ('1', 'done', '1', now(), 3)")
    task_id = insert(db, "2+2")
    calculators(max_attempts=1)
    assert wait_done(db, [task_id])[task_id] == ("done", 4, None)
