"""Fair claiming between owners (docs/design.md, "Fair claiming"), with real Calculators on the
real database: one key's backlog of runaways does not hold back another
key's quick tasks for more than about one CALCULATION_TIMEOUT."""

from __future__ import annotations

import psycopg
import pytest

from tests.support import wait_done, wait_for
from worker.task_queue import claim_tasks

RUNAWAY = "9**(9**9)"
TIMEOUT = 2.5  # CALCULATION_TIMEOUT of the scenario
# The bounds here are wall-clock waits behind runaways. CALCULATION_TIMEOUT
# counts CPU time, which a runaway gets slowly on a loaded machine; with the
# wall-clock ceiling at the timeout too, a runaway holds its process for at
# most TIMEOUT seconds, whatever the load (docs/design.md, "Timeouts").
RUNAWAY_BOUND = dict(calculation_timeout=TIMEOUT, calculation_wall_timeout=TIMEOUT)
BOUND = TIMEOUT + 3  # the promise for B's last result after its insert (docs/design.md, "Fair share")


@pytest.fixture(autouse=True)
def owners(db):
    """API keys 1 to 100 (a task's owner is a key's id; sql/010 checks it)."""
    db.execute("INSERT INTO api_keys (name, secret_sha256) "
               "SELECT 'key' || g, sha256(g::text::bytea) FROM generate_series(1, 100) g")


def insert_owned(db, owner: int, expressions: list[str]) -> list[int]:
    """One INSERT of rows with an owner and no round: the trigger gives them
    theirs, as for a psql user."""
    rows = db.execute("INSERT INTO tasks (expression, owner) SELECT e, %s FROM unnest(%s::text[]) "
                      "WITH ORDINALITY AS x(e, n) ORDER BY n RETURNING id", (owner, expressions))
    return sorted(r[0] for r in rows)


def cancel_owner(db, owner: int) -> None:
    """Cancel an owner's leftovers, so that the Calculators stop quickly."""
    db.execute("SELECT cancel_tasks(array_agg(id)) FROM tasks WHERE owner = %s AND status = 'pending'",
               (owner,))


@pytest.mark.parametrize("count", [1, 3])
def test_quick_tasks_of_one_key_are_not_held_back_by_runaways_of_another(db, calculators, count):
    started = [calculators(**RUNAWAY_BOUND) for _ in range(count)]
    insert_owned(db, 1, [RUNAWAY] * 1000)
    # Every child of every Calculator on one of A's runaways: the worst moment.
    wait_for(lambda: all(len(c.busy_evaluator_pids()) == 2 for c in started), timeout=30,
             message="every evaluation process to run one of A's runaways")
    quick = insert_owned(db, 2, [f"{n} + 1" for n in range(20)])
    try:
        results = wait_done(db, quick, timeout=BOUND + 3)
        assert all(results[i][0] == "done" for i in quick), results
        took = db.execute("SELECT extract(epoch FROM max(finished_at) - min(created_at))::float "
                          "FROM tasks WHERE id = ANY(%s)", (quick,)).fetchone()[0]
        assert took <= BOUND, f"B's last result came {took:.1f} s after its insert"
        runaways_done = db.execute("SELECT count(*) FROM tasks WHERE owner = 1 AND status <> 'pending'"
                                   ).fetchone()[0]
        assert runaways_done < 1000 // 2, "B was served long before A's backlog"
    finally:
        cancel_owner(db, 1)
    wait_for(lambda: not db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0],
             timeout=20, message="A's cancelled runaways to leave the Calculators")


def test_quick_tasks_are_not_held_back_by_two_keys_with_runaway_backlogs(db, calculators):
    """Found from outside: with a second key's backlog (C) beside A's, a
    child freed by one of A's runaways went to A's next one (A then had
    nothing running here, like B, and the lower round): B moved one turn per
    finished runaway, 5-11 timeouts. Recent use decides that tie."""
    started = [calculators(**RUNAWAY_BOUND) for _ in range(2)]
    insert_owned(db, 1, [RUNAWAY] * 500)
    insert_owned(db, 3, [RUNAWAY] * 300)
    wait_for(lambda: all(len(c.busy_evaluator_pids()) == 2 for c in started), timeout=30,
             message="every evaluation process to run one of A's or C's runaways")
    wait_for(lambda: db.execute("SELECT count(*) FROM tasks WHERE status = 'error'").fetchone()[0] >= 4,
             timeout=3 * TIMEOUT + 5, message="the first runaways to time out (recent use recorded)")
    quick = insert_owned(db, 2, [f"{n} + 1" for n in range(20)])
    try:
        wait_done(db, quick, timeout=BOUND + 10)
        took = db.execute("SELECT extract(epoch FROM max(finished_at) - min(created_at))::float "
                          "FROM tasks WHERE id = ANY(%s)", (quick,)).fetchone()[0]
        assert took <= BOUND, f"B's last result came {took:.1f} s after its insert"
    finally:
        cancel_owner(db, 1)
        cancel_owner(db, 3)
    wait_for(lambda: not db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0],
             timeout=20, message="the cancelled runaways to leave the Calculators")


def test_the_claim_takes_tenants_in_turns_rows_without_an_owner_as_one(db, worker_url):
    """Keys take turns, one task each a turn; the rows without an owner are
    one tenant more, from the queue's head (sql/017), in arrival order among
    themselves."""
    a = insert_owned(db, 1, [f"{n}" for n in range(6)])
    b = insert_owned(db, 2, [f"{n}" for n in range(3)])
    nobody = [db.execute("INSERT INTO tasks (expression) VALUES ('1') RETURNING id").fetchone()[0]
              for _ in range(2)]
    with psycopg.connect(worker_url, autocommit=True) as conn:
        claims = [claim_tasks(conn, 4, 30, 5)[0] for _ in range(3)]
    assert [[t.id for t in tasks] for tasks in claims] == [
        [a[0], b[0], nobody[0], a[1]], [b[1], nobody[1], a[2], b[2]], [a[3], a[4], a[5]]]
    assert [t.owner for t in claims[0]] == [1, 2, None, 1]


def test_a_key_coming_back_starts_at_the_head_not_behind_the_backlog(db, worker_url):
    a = insert_owned(db, 1, [f"{n}" for n in range(50)])
    with psycopg.connect(worker_url, autocommit=True) as conn:
        first, _ = claim_tasks(conn, 10, 30, 5)
        b = insert_owned(db, 2, ["1", "2"])
        second, _ = claim_tasks(conn, 4, 30, 5)
    assert [t.id for t in first] == a[:10]
    # B's first round is the queue head's (A's oldest pending, claimed or not).
    assert [t.id for t in second] == [b[0], b[1], a[10], a[11]]


def test_a_task_waiting_unstarted_is_handed_back_to_an_idle_calculator(db, calculators):
    first = calculators(num_processes=1, calculation_timeout=60)
    db.execute("INSERT INTO tasks (expression) SELECT unnest(%s::text[])",
               ([RUNAWAY] + [f"{n} * 2" for n in range(5)],))
    ids = [r[0] for r in db.execute("SELECT id FROM tasks ORDER BY id")]
    runaway, quick = ids[0], ids[1:]
    wait_for(lambda: first.busy_evaluator_pids(), timeout=20, message="the runaway to run")
    assert db.execute("SELECT count(*) FROM tasks WHERE attempts = 1").fetchone()[0] == 6, \
        "the first Calculator claimed them all"
    second = calculators(num_processes=1, calculation_timeout=60)
    try:
        results = wait_done(db, quick, timeout=15)
        assert all(results[i] == ("done", 2 * (i - quick[0]), None) for i in quick)
        assert "handed back" in first.log()
        assert set(quick) <= _claimed_ids(second.log())
        # The hand-back did not count as an attempt.
        assert db.execute("SELECT max(attempts) FROM tasks WHERE id = ANY(%s)", (quick,)).fetchone()[0] == 1
    finally:
        db.execute("SELECT cancel_tasks(ARRAY[%s]::bigint[])", (runaway,))


def test_an_idle_child_serves_the_owner_with_fewest_running_first(db, calculators):
    """One claim holds A's two runaways and ten quick tasks, and B's ten quick
    tasks, B's after all of A's in the fair order (explicit rounds). The
    first child takes A's tasks; the second serves B, not A's next task,
    because A already has a child here; and A's quick tasks do not ride
    behind B's in its chunk (A has more running)."""
    runaways = insert_owned(db, 1, [RUNAWAY] * 2)
    a_quick = insert_owned(db, 1, [f"{n} + 100" for n in range(10)])
    b_quick = [r[0] for r in db.execute(
        "INSERT INTO tasks (expression, owner, fair_round) SELECT g || ' + 200', 2, 1000 + g "
        "FROM generate_series(1, 10) g RETURNING id")]
    calc = calculators(num_processes=2, calculation_timeout=60)  # its first claim takes all 22
    try:
        wait_done(db, b_quick, timeout=15)
        assert _claim_lines(calc.log())[0].endswith(f"claimed ids={runaways[0]}-{b_quick[-1]}")
        early = db.execute("SELECT count(*) FROM tasks WHERE id = ANY(%s) AND finished_at <= "
                           "(SELECT max(finished_at) FROM tasks WHERE id = ANY(%s))",
                           (a_quick, b_quick)).fetchone()[0]
        assert early == 0, f"{early} of A's quick tasks were done before B's last"
    finally:
        db.execute("SELECT cancel_tasks(array_agg(id)) FROM tasks WHERE status = 'pending'")


def test_a_runaway_load_does_not_churn_claims_and_hand_backs(db, calculators):
    """Claims adapt to what the children can start within the hold time:
    with every task a runaway, the Calculator holds about one a child
    instead of claiming TASK_NUM and handing most of them back every hold
    time."""
    calc = calculators(num_processes=2, calculation_timeout=1.5, calculation_wall_timeout=1.5, task_num=100)
    db.execute("INSERT INTO tasks (expression) SELECT %s FROM generate_series(1, 300)", (RUNAWAY,))
    try:
        wait_for(lambda: db.execute("SELECT count(*) FROM tasks WHERE status = 'error'").fetchone()[0] >= 8,
                 timeout=30, message="four rounds of timeouts")
        handed_back = sum(_count_ids(line.split("released ids=")[1].split(" ")[0])
                          for line in calc.log().splitlines() if "handed back" in line)
        # The first claim (nothing known yet) is TASK_NUM: 98 go back once.
        assert handed_back <= 98 + 20, f"{handed_back} tasks handed back"
    finally:
        db.execute("SELECT cancel_tasks(array_agg(id)) FROM tasks WHERE status = 'pending'")


def _claim_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " claimed ids=" in line]


def _count_ids(text: str) -> int:
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def _claimed_ids(log: str) -> set[int]:
    ids = set()
    for line in _claim_lines(log):
        for part in line.split("claimed ids=")[1].split(","):
            low, _, high = part.partition("-")
            ids.update(range(int(low), int(high or low) + 1))
    return ids


@pytest.mark.parametrize("history,skip", [(None, []), ("finished", []), ("finished", [1, 2]), ("leased", [])])
def test_the_claim_walks_the_fair_index_whatever_the_statistics_say(db, worker_url, history, skip):
    """The claim stops after LIMIT rows of tasks_pending_fair rather than
    sort every pending row, with statistics that believe in few claimable
    rows: a fresh table, an ANALYZE of a long history before a burst, or an
    ANALYZE while every pending task was leased (a busy queue)."""
    from core.database import load_query
    from core.settings import CalculatorSettings
    from tests.plans import explain, index_scans
    db.execute("VACUUM ANALYZE tasks")
    if history == "finished":
        db.execute("INSERT INTO tasks (expression, status, result, finished_at) "
                   "SELECT '1', 'done', '1', now() FROM generate_series(1, 50000)")
        db.execute("ANALYZE tasks")
    if history == "leased":  # the statistics stay: an ANALYZE of an empty table keeps the old ones
        db.execute("INSERT INTO tasks (expression, process_at) "
                   "SELECT '1', now() + interval '1 hour' FROM generate_series(1, 5000)")
        db.execute("ANALYZE tasks")
        db.execute("TRUNCATE tasks RESTART IDENTITY")
        db.execute("VACUUM ANALYZE tasks")
    db.execute("INSERT INTO tasks (expression, owner, fair_round) SELECT '1', g % 100 + 1, g / 100 "
               "FROM generate_series(1, 20000) g")
    query = "\n".join(line for line in load_query("claim_tasks").splitlines() if not line.startswith("--"))
    params = {"limit": 100, "lease_seconds": 30, "max_attempts": 5,
              "max_expression_length": 10_000, "max_variables_chars": 100_000,
              "after_place": -2**63, "after_id": -2**63, "skip": skip}
    with psycopg.connect(worker_url, autocommit=True) as conn:
        for name, value in CalculatorSettings().session_settings().items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            plan = explain(conn, query, params)
            scans = index_scans(plan, "tasks_pending_fair")
            assert [s["Node Type"] for s in scans] == ["Index Scan"], plan
            assert (scans[0]["Actual Rows"], scans[0]["Actual Loops"]) == (100, 1), plan
