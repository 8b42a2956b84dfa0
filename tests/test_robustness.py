"""One bad row, one dead process, one lock: each harms nothing but itself.

Real Calculator processes against the real database; the rows are inserted
with SQL, as a psql user would, between valid rows in one statement."""

from __future__ import annotations

import psycopg

from tests.support import wait_done, wait_for

VALID = [("x + 1", '{"x": 1}', 2), ("6*7", "{}", 42), ("x * y", '{"x": 3, "y": 4}', 12)]


def insert_between_valid_rows(db, poison_rows) -> tuple[list[int], list[int]]:
    """One INSERT: valid, poison, valid, ..., poison, valid. A poison row is
    (expression, SQL for its variables, that SQL's parameters)."""
    values, params, kinds = [], [], []
    for n, poison in enumerate(list(poison_rows) + [None]):
        expression, variables, _ = VALID[n % len(VALID)]
        values.append("(%s, %s::jsonb)")
        params += [expression, variables]
        kinds.append("valid")
        if poison is not None:
            values.append(f"(%s, {poison[1]})")
            params += [poison[0], *poison[2]]
            kinds.append("poison")
    ids = [r[0] for r in db.execute(
        f"INSERT INTO tasks (expression, variables) VALUES {', '.join(values)} RETURNING id", params)]
    return ([i for i, k in zip(ids, kinds) if k == "valid"],
            [i for i, k in zip(ids, kinds) if k == "poison"])


def expected_valid(db, valid_ids):
    rows = db.execute("SELECT id, expression FROM tasks WHERE id = ANY(%s)", (valid_ids,))
    answers = {e: r for e, _, r in VALID}
    return {task_id: ("done", answers[expression], None) for task_id, expression in rows}


def test_poison_rows_become_their_own_errors_and_harm_no_batch_mate(db, calculators):
    calc = calculators(memory_limit_mb=100, task_num=100)
    db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
    poison = [
        # 5,001 digits: more than Python's json reads
        ("x", "jsonb_build_object('x', ('1' || repeat('0', 5000))::numeric)", []),
        # 900 deep: more than pickle sends
        ("x", "%s::jsonb", ['{"x": ' + "[" * 900 + "1" + "]" * 900 + "}"]),
        # 30 MB: a child capped at 100 MB could not even receive it
        ("1+" * 15_000_000 + "1", "'{}'", []),
        # 401 digits: unusual but fine
        ("x", "'{\"x\": 1e400}'", []),
    ]
    valid, bad = insert_between_valid_rows(db, poison)
    db.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    db.execute("NOTIFY tasks_inserted")  # one claim takes the whole batch
    results = wait_done(db, valid + bad, timeout=60)
    assert {i: results[i] for i in valid} == expected_valid(db, valid)
    digits, nested, huge, big = (results[i] for i in bad)
    assert digits[0] == "error" and digits[2].startswith(
        "'variables' cannot be read: Exceeds the limit (4300 digits)"), digits
    assert nested == ("error", None, "variable 'x' must be a number, not an array")
    assert huge == ("error", None, "expression is too long: 30000001 characters, the limit is 10000")
    assert big == ("done", 10**400, None)
    assert db.execute("SELECT max(attempts) FROM tasks").fetchone()[0] == 1, "nobody was blamed"
    assert calc.process.poll() is None, calc.log()
    assert "refused ids=" in calc.log() and "evaluation process died" not in calc.log()


def test_a_child_that_dies_before_starting_gets_its_chunk_split_until_the_culprit_is_alone(db, calculators):
    """With the length cap lifted, a 30 MB expression reaches the children,
    whose 100 MB cap can hardly hold it: a child dies receiving it, before
    starting any task. The chunk goes again, then is halved until the culprit
    is alone; every batch-mate is calculated with its one attempt, and the
    culprit ends in an error of its own (given up after MAX_ATTEMPTS, or timed
    out when a child managed to receive it after all)."""
    calc = calculators(memory_limit_mb=100, max_expression_length=50_000_000, max_attempts=2,
                       num_processes=1, calculation_timeout=2, queue_wait_time=0.2)
    db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
    valid, bad = insert_between_valid_rows(db, [("1+" * 15_000_000 + "1", "'{}'", [])])
    more_valid, _ = insert_between_valid_rows(db, [])
    db.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    db.execute("NOTIFY tasks_inserted")
    results = wait_done(db, valid + more_valid + bad, timeout=90)
    valid += more_valid
    assert {i: results[i] for i in valid} == expected_valid(db, valid)
    assert results[bad[0]][0] == "error"
    attempts = dict(db.execute("SELECT id, attempts FROM tasks").fetchall())
    assert all(attempts[i] == 1 for i in valid), attempts
    log = calc.log()
    assert f"before starting ids={bad[0]}\n" in log, log  # alone at last
    assert "Traceback" not in log
    assert calc.process.poll() is None, log
