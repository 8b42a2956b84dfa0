"""-0.0 keeps its sign end to end, as in Python: variables in (the API, psql),
results out (the API's single, bulk, waiting and listing reads, the page,
the client, psql), although jsonb has no negative zero (sql/016 keeps the
sign beside it). Everything else reads as before."""

from __future__ import annotations

import json
import math
import threading
import urllib.request

import psycopg
import pytest
from werkzeug.serving import make_server

from core.migrations import _apply, apply_migrations, available_migrations
from tests.conftest import create_database
from tests.http_client import request
from tests.support import wait_done

pytestmark = pytest.mark.timeout(120)

# (expression, variables as JSON text, Python's value). The values are
# written as Python arithmetic (nothing is evaluated from text).
CASES = [
    ("-0.0", "{}", -0.0),
    ("-0.0*x", '{"x": 2.5}', -0.0 * 2.5),
    ("+0*-+0.0", "{}", 0 * -(+0.0)),
    ("x", '{"x": -0.0}', -0.0),
    ("x*y", '{"x": -0.0, "y": 3}', -0.0 * 3),
    ("atan2(0, x)", '{"x": -0.0}', math.atan2(0, -0.0)),
    ("atan2(x, -1)", '{"x": -0.00}', math.atan2(-0.0, -1)),
    ("x + y", '{"x": -0.0, "y": -0.5}', -0.0 + -0.5),
    # what had no sign to lose reads as before
    ("0.0", "{}", 0.0),
    ("x", '{"x": -0}', 0),
    ("x", '{"x": 0.0}', 0.0),
    ("-x", '{"x": 0}', 0),
    ("2**70", "{}", 2**70),
    ("x", '{"x": 1e-5}', 1e-5),
]


def signed(value) -> tuple:
    """A number and, for a float, its sign: -0.0 and 0.0 differ here."""
    return (type(value), value, math.copysign(1, value) if isinstance(value, float) else None)


def _submit_all(base: str) -> list[int]:
    ids = []
    for expression, variables, _ in CASES:   # one at a time, and all in one bulk
        body = '{"expression": %s, "variables": %s}' % (json.dumps(expression), variables)
        status, _, answer = request(base, "POST", "/api/expression", body, {"Content-Type": "application/json"})
        assert status == 202, answer
        ids.append(answer["expression_id"])
    body = '{"items": [%s]}' % ",".join('{"expression": %s, "variables": %s}' % (json.dumps(e), v)
                                          for e, v, _ in CASES)
    status, _, answer = request(base, "POST", "/api/expressions", body, {"Content-Type": "application/json"})
    assert status == 202, answer
    return ids + answer["expression_ids"]


def _check_api_reads(base: str, ids: list[int]) -> None:
    wants = [want for _, _, want in CASES] * 2
    for task_id, want in zip(ids, wants):
        for query in ("", "?wait=10"):
            status, _, answer = request(base, "GET", f"/api/result/{task_id}{query}")
            assert status == 200 and signed(answer["result"]) == signed(want), (task_id, answer, want)
    with urllib.request.urlopen(f"{base}/api/result/{ids[0]}", timeout=10) as response:
        assert b'"result":-0.0' in response.read().replace(b" ", b"")   # the JSON text says -0.0
    status, _, answer = request(base, "GET", "/api/results?wait=5&ids=" + ",".join(map(str, ids)))
    assert status == 200
    assert [signed(r["result"]) for r in answer["results"]] == [signed(w) for w in wants]
    status, _, listing = request(base, "GET", f"/api/tasks?limit={len(ids)}")
    assert status == 200
    listed = {t["expression_id"]: t for t in listing["tasks"]}
    for task_id, want in zip(ids, wants):
        assert signed(listed[task_id]["result"]) == signed(want)
    # the variables read back as they were sent, -0.0 with its sign
    assert signed(listed[ids[3]]["variables"]["x"]) == signed(-0.0)
    assert signed(listed[ids[10]]["variables"]["x"]) == signed(0.0)


def test_the_api_keeps_the_sign_of_zero_in_and_out(db, calculators, http_server):
    ids = _submit_all(http_server)
    calculators()
    outcomes = wait_done(db, ids)
    assert all(outcomes[i][0] == "done" for i in ids), outcomes
    _check_api_reads(http_server, ids)


def test_with_a_key_and_limits_the_admitted_insert_keeps_it_too(db, calculators, make_app):
    """With a key or limits, submissions go through insert_tasks_admitted.sql."""
    app = make_app(RATE_LIMIT_ITEMS=1000, RATE_LIMIT_REQUESTS=1000, MAX_PENDING_PER_KEY=1000)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        ids = _submit_all(base)
        calculators()
        wait_done(db, ids)
        _check_api_reads(base, ids)
    finally:
        server.shutdown()
        thread.join()


def test_psql_users_write_and_read_the_sign(db, calculators):
    """psql: a variable -0.0 is written by naming it in variables_negative_zero
    (or with negative_zero_names()); a result -0.0 reads as result 0.0 with
    result_negative_zero true, and signed_result() gives -0.0 (docs/psql.md)."""
    named = db.execute("INSERT INTO tasks (expression, variables, variables_negative_zero) "
                       "VALUES ('atan2(0, x)', '{\"x\": 0.0}', '{x}') RETURNING id").fetchone()[0]
    found = db.execute("INSERT INTO tasks (expression, variables, variables_negative_zero) "
                       "SELECT 'x*y', v::jsonb, negative_zero_names(v::json) "
                       "FROM (VALUES ('{\"x\": -0.0, \"y\": 2}')) AS t(v) RETURNING id").fetchone()[0]
    literal = db.execute("INSERT INTO tasks (expression) VALUES ('-0.0') RETURNING id").fetchone()[0]
    # jsonb alone cannot hold the sign: this x is 0.0, as the docs say
    unsigned = db.execute("INSERT INTO tasks (expression, variables) "
                          "VALUES ('atan2(0, x)', '{\"x\": -0.0}') RETURNING id").fetchone()[0]
    calculators()
    wait_done(db, [named, found, literal, unsigned])
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT id, result::text, result_negative_zero, signed_result(result, result_negative_zero)::text, "
        "signed_variables(variables, variables_negative_zero)::text FROM tasks")}
    assert rows[named][:3] == (repr(math.pi), False, repr(math.pi))
    assert rows[found][:3] == ("0.0", True, "-0.0") and json.loads(rows[found][3]) == {"x": -0.0, "y": 2}
    assert "-0.0" in rows[found][3]
    assert rows[literal][:3] == ("0.0", True, "-0.0")
    assert rows[unsigned][:3] == ("0.0", False, "0.0")
    outcomes = db.execute("SELECT id, result::text FROM task_outcomes(%s)", ([literal, unsigned],)).fetchall()
    assert outcomes == [(literal, "-0.0"), (unsigned, "0.0")]


def test_the_database_refuses_a_sign_that_does_not_fit(db):
    """The sign columns must agree with the jsonb beside them, and a finished
    row's signs are as final as its result (sql/016)."""
    refused = [
        ("INSERT INTO tasks (expression, variables, variables_negative_zero) VALUES ('x', '{\"x\": 0}', '{x}')",
         "tasks_variables_negative_zero_are_float_zeros"),      # an integer 0 has no sign
        ("INSERT INTO tasks (expression, variables, variables_negative_zero) VALUES ('x', '{\"x\": 0.5}', '{x}')",
         "tasks_variables_negative_zero_are_float_zeros"),
        ("INSERT INTO tasks (expression, variables, variables_negative_zero) VALUES ('x', '{\"x\": 0.0}', '{y}')",
         "tasks_variables_negative_zero_are_float_zeros"),
        ("INSERT INTO tasks (expression, status, result, result_negative_zero, finished_at) "
         "VALUES ('1', 'done', '1.0', true, now())", "tasks_result_negative_zero_is_a_float_zero"),
        ("INSERT INTO tasks (expression, status, result, result_negative_zero, finished_at) "
         "VALUES ('1', 'done', '0', true, now())", "tasks_result_negative_zero_is_a_float_zero"),
    ]
    for statement, constraint in refused:
        with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
            db.execute(statement)
    done = db.execute("INSERT INTO tasks (expression, variables, variables_negative_zero, status, result, "
                      "result_negative_zero, finished_at) VALUES ('x', '{\"x\": 0.0}', '{x}', 'done', '0.0', "
                      "true, now()) RETURNING id").fetchone()[0]
    for change in ("result_negative_zero = false", "variables_negative_zero = NULL"):
        with pytest.raises(psycopg.errors.RestrictViolation, match="is finished"):
            db.execute(f"UPDATE tasks SET {change} WHERE id = %s", (done,))


def test_the_roles_may_write_only_their_sign(api_url, worker_url, db):
    """The API may name variables in its INSERT; the Calculator may set the
    result's sign in its UPDATE; neither may write the other's."""
    task = db.execute("INSERT INTO tasks (expression, variables) VALUES ('x', '{\"x\": 0.0}') "
                      "RETURNING id").fetchone()[0]
    with psycopg.connect(api_url, autocommit=True) as api:
        api.execute("INSERT INTO tasks (expression, variables, variables_negative_zero) "
                    "VALUES ('x', '{\"x\": 0.0}', '{x}')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            api.execute("UPDATE tasks SET result_negative_zero = true WHERE id = %s", (task,))
    with psycopg.connect(worker_url, autocommit=True) as worker:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker.execute("UPDATE tasks SET variables_negative_zero = '{x}' WHERE id = %s", (task,))


def test_the_migration_keeps_existing_rows_as_they_read(server_url):
    """On a table with rows (done, error, pending), sql/016 adds the columns
    without changing what any row reads as, and its checks hold for them."""
    url = create_database(server_url, prefix="calculator_negzero")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        for migration in available_migrations():
            if migration.version < 16:
                _apply(conn, migration)
        conn.execute("INSERT INTO tasks (expression, variables, status, result, error, finished_at) VALUES "
                     "('x', '{\"x\": 0.0}', 'done', '0.0', NULL, now()), "
                     "('2**70', '{}', 'done', '1180591620717411303424', NULL, now()), "
                     "('1/0', '{}', 'error', NULL, 'division by zero', now()), "
                     "('1+1', '{}', 'pending', NULL, NULL, NULL)")
        before = conn.execute("SELECT id, result::text, variables::text FROM tasks ORDER BY id").fetchall()
        apply_migrations(conn)
        after = conn.execute("SELECT id, signed_result(result, result_negative_zero)::text, "
                             "signed_variables(variables, variables_negative_zero)::text "
                             "FROM tasks ORDER BY id").fetchall()
        assert after == before
        for constraint in ("tasks_result_negative_zero_is_a_float_zero",
                           "tasks_variables_negative_zero_are_float_zeros"):
            conn.execute(f"ALTER TABLE tasks VALIDATE CONSTRAINT {constraint}")


def test_the_page_and_the_client_show_the_sign(db, calculators, http_server, client, capsys):
    from calculator_client import Client
    from calculator_client.cli import main
    task = db.execute("INSERT INTO tasks (expression, variables, variables_negative_zero) "
                      "VALUES ('x*2.5', '{\"x\": 0.0}', '{x}') RETURNING id").fetchone()[0]
    calculators()
    wait_done(db, [task])
    detail = client.get(f"/dashboard/task/{task}").get_data(as_text=True)
    assert '<dd class="result">-0.0</dd>' in detail and '{"x": -0.0}' in detail
    listed = client.get("/dashboard/tasks?status=done").get_data(as_text=True)
    assert '<span class="result">-0.0</span>' in listed and "x=-0.0" in listed
    calculator = Client(http_server)
    assert signed(calculator.calculate("-0.0*x", {"x": 2.5}, timeout=30)) == signed(-0.0)
    assert signed(calculator.calculate("atan2(0, x)", {"x": -0.0}, timeout=30)) == signed(math.pi)
    assert main(["--url", http_server, "x*-1", "x=0.0"]) == 0
    assert capsys.readouterr().out == "-0.0\n"


def test_both_stores_keep_the_sign_and_the_claim_gives_it(db):
    """store_results.sql and store_results_skip_locked.sql (for a batch with
    rows held locked) each store -0.0 as 0.0 with result_negative_zero; the
    claim hands the Calculator a variable -0.0 with its sign."""
    from worker.task_queue import Outcome, claim_tasks, store_outcomes
    db.execute("INSERT INTO tasks (expression, variables, variables_negative_zero) VALUES "
               "('x', '{\"x\": 0.0}', '{x}'), ('x', '{\"x\": 0.0}', NULL), ('y', '{\"y\": 0.0}', '{y}'), "
               "('y', '{\"y\": 0.0}', NULL)")
    tasks, _ = claim_tasks(db, 10, 30, 5)
    assert [signed(t.variables[t.expression]) for t in tasks] == [signed(-0.0), signed(0.0)] * 2
    plain, locked = tasks[:2], tasks[2:]
    assert store_outcomes(db, [Outcome(plain[0], "-0.0", None), Outcome(plain[1], "0.0", None)]) \
        == ({plain[0].id, plain[1].id}, set())
    assert store_outcomes(db, [Outcome(locked[0], "-0.0", None), Outcome(locked[1], "0.0", None)],
                          skip_locked=True) == ({locked[0].id, locked[1].id}, set())
    rows = db.execute("SELECT result::text, result_negative_zero FROM tasks ORDER BY id").fetchall()
    assert rows == [("0.0", True), ("0.0", False)] * 2
