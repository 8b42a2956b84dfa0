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
    "TRUNCATE idempotency_keys",
    "DROP TABLE idempotency_keys",
]
WORKER_MAY_NOT = [
    "INSERT INTO tasks (expression) VALUES ('1')",
    "UPDATE tasks SET expression = '6*7'",
    "UPDATE tasks SET variables = '{\"x\": 1}'",
    "DELETE FROM tasks",
    "DROP TABLE tasks",
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
