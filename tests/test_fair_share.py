"""A fair share of the Calculators' time (docs/design.md, "Fair share of
time"), with real Calculators on the real database: among the tenants with
work (each key, and rows without an owner as one more), evaluation time
(CPU seconds) goes by weight, whatever each one queued and however long
its tasks take."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support import wait_done, wait_for
from worker.fair_share import ACTIVE_SECONDS, QUANTUM_SECONDS, FairShare

RUNAWAY = "9**(9**9)"
TIMEOUT = 2.5
# The bounds are wall-clock waits behind runaways; with the wall-clock
# ceiling at the timeout too, a runaway holds its process for at most
# TIMEOUT seconds on a loaded machine (as in tests/test_fairness.py).
RUNAWAY_BOUND = dict(calculation_timeout=TIMEOUT, calculation_wall_timeout=TIMEOUT)
BOUND = TIMEOUT + 3  # the promise for a bulk's last result after its insert
HEAVY = "(9**(9**6)) % 7"  # about 0.1 s of CPU time, the same every time: its result is 1
MIDDLING = "(9**265720) % 7"  # about 0.04 s of CPU time: its result is 2


@pytest.fixture(autouse=True)
def keys(db):
    """API keys 1 to 3 (a task's owner is a key's id)."""
    db.execute("INSERT INTO api_keys (name, secret_sha256) "
               "SELECT 'key' || g, sha256(g::text::bytea) FROM generate_series(1, 3) g")


def insert_many(db, owner: int | None, expressions: list[str]) -> list[int]:
    """One INSERT, as a psql user would write it (owner None: rows without an owner)."""
    rows = db.execute("INSERT INTO tasks (expression, owner) SELECT e, %s FROM unnest(%s::text[]) "
                      "WITH ORDINALITY AS x(e, n) ORDER BY n RETURNING id", (owner, expressions))
    return sorted(r[0] for r in rows)


def finished_by_owner(db) -> dict:
    return dict(db.execute("SELECT coalesce(owner, 0), count(*) FROM tasks WHERE status <> 'pending' "
                           "GROUP BY 1").fetchall())


def order_of_results(db) -> str:
    """Whose results came in what order (A: key 1, B: key 2), for a failure's message."""
    return "".join("AB"[owner - 1] if owner in (1, 2) else "?" for (owner,) in db.execute(
        "SELECT coalesce(owner, 0) FROM tasks WHERE status <> 'pending' ORDER BY finished_at, id"))


def cancel_all(db) -> None:
    db.execute("SELECT cancel_tasks(array_agg(id)) FROM tasks WHERE status = 'pending'")
    wait_for(lambda: not db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0],
             timeout=20, message="the cancelled tasks to leave the Calculators")


def last_result_after_insert(db, ids: list[int]) -> float:
    return db.execute("SELECT extract(epoch FROM max(finished_at) - min(created_at))::float "
                      "FROM tasks WHERE id = ANY(%s)", (ids,)).fetchone()[0]


def bulk_and_psql_beside_runaways(db, calculators, count: int, runaways: int, bulk: int, rows: int):
    """count Calculators, key 1's runaways queued and every process on one;
    then key 2's bulk of quick tasks and psql rows without an owner: their ids."""
    started = [calculators(**RUNAWAY_BOUND) for _ in range(count)]
    insert_many(db, 1, [RUNAWAY] * runaways)
    wait_for(lambda: all(len(c.busy_evaluator_pids()) == 2 for c in started), timeout=30,
             message="every evaluation process to run one of A's runaways")
    return (insert_many(db, 2, [f"{n} + 1" for n in range(bulk)]),
            insert_many(db, None, [f"{n} * 2" for n in range(rows)]))


def assert_within_bound(db, bulk: list[int], psql: list[int]) -> None:
    for name, ids in (("B's bulk", bulk), ("the psql rows", psql)):
        took = last_result_after_insert(db, ids)
        assert took <= BOUND, f"{name}: the last result came {took:.1f} s after the insert"


@pytest.mark.parametrize("count", [1, 3])
def test_a_bulk_and_psql_rows_are_not_held_back_by_another_keys_runaways(db, calculators, count):
    """A's 1,000 runaways first (each takes a turn of TIMEOUT seconds), then
    B's bulk of 1,000 quick tasks and 20 psql rows without an owner: each
    is done within TIMEOUT + 3 s of its insert (by turns counted in tasks,
    B needed about 1,000 of A's timeouts: minutes)."""
    bulk, psql = bulk_and_psql_beside_runaways(db, calculators, count, runaways=1000, bulk=1000, rows=20)
    try:
        results = wait_done(db, bulk + psql, timeout=BOUND + 10)
        assert all(results[i] == ("done", n + 1, None) for n, i in enumerate(bulk))
        assert all(results[i] == ("done", n * 2, None) for n, i in enumerate(psql))
        assert_within_bound(db, bulk, psql)
        assert finished_by_owner(db).get(1, 0) < 100, "A's runaways were not all run first"
    finally:
        cancel_all(db)


@pytest.mark.parametrize("count", [1, 3])
def test_two_flooding_keys_share_the_time_by_their_weights(db, calculators, count):
    """Keys of weights 1 and 3, both with more work than the Calculators
    can do: 25 % and 75 % of the evaluation time (± 5 %). Their tasks take
    the same CPU time each, so the share of time is the share of tasks."""
    db.execute("UPDATE api_keys SET weight = 3 WHERE id = 2")
    started = [calculators(num_processes=2) for _ in range(count)]
    insert_many(db, 1, [HEAVY] * 1500)
    insert_many(db, 2, [HEAVY] * 1500)
    try:
        # Past the first turns (the tasks claimed before B's came, the first
        # look at the others and the weights) ...
        wait_for(lambda: sum(finished_by_owner(db).values()) >= 100, timeout=60, message="100 results")
        before = finished_by_owner(db)
        # ... then about 30 s of work on two cores: many turns of each key
        # (a turn is about half a second of CPU time, fair_share.py), so
        # that where the count starts and stops in a turn moves the shares
        # by less than the ± 5 %.
        wait_for(lambda: sum(finished_by_owner(db).values()) >= sum(before.values()) + 600,
                 timeout=200, interval=0.1, message="600 more results")
        after = finished_by_owner(db)
        a, b = after.get(1, 0) - before.get(1, 0), after.get(2, 0) - before.get(2, 0)
        assert 0.20 <= a / (a + b) <= 0.30, \
            f"weight 1: {a} tasks, weight 3: {b} tasks; the last results in order: {order_of_results(db)[-200:]}"
        assert all(c.process.poll() is None for c in started)
    finally:
        cancel_all(db)
    assert db.execute("SELECT count(*) FROM tasks WHERE status = 'done' AND result <> '1'").fetchone()[0] == 0


def test_a_key_coming_back_after_a_pause_gets_its_share_not_its_pause(db, calculators):
    """B works a little, then has nothing to do while A works alone; then B
    comes back with as much work as A: from then on they share. B does not
    get the whole machine for the time it had nothing to do (start-time
    fair queueing: B starts again at the current virtual time)."""
    calculators(num_processes=2)
    wait_done(db, insert_many(db, 2, [HEAVY] * 4), timeout=60)
    insert_many(db, 1, [HEAVY] * 1500)
    wait_for(lambda: finished_by_owner(db).get(1, 0) >= 80, timeout=60, interval=0.1,
             message="A's first 80 results (8 s of CPU time)")
    insert_many(db, 2, [HEAVY] * 1500)
    try:
        before = finished_by_owner(db)
        wait_for(lambda: sum(finished_by_owner(db).values()) >= sum(before.values()) + 60,
                 timeout=60, interval=0.1, message="60 more results")
        after = finished_by_owner(db)
        a, b = after.get(1, 0) - before.get(1, 0), after.get(2, 0) - before.get(2, 0)
        assert a >= 0.3 * (a + b), f"right after B came back: A {a} tasks, B {b} tasks"
        assert b >= 0.3 * (a + b), f"right after B came back: A {a} tasks, B {b} tasks"
    finally:
        cancel_all(db)


def test_psql_rows_take_turns_with_a_keys_backlog_of_quick_tasks(db, calculators):
    """A's 20,000 quick tasks queued first, then 20 psql rows without an
    owner: they take turns with A's from the queue's head (as one tenant),
    not after A's backlog."""
    calculators()
    db.execute("INSERT INTO tasks (expression, owner) SELECT g || ' + 1', 1 FROM generate_series(1, 20000) g")
    wait_for(lambda: finished_by_owner(db).get(1, 0) >= 100, timeout=30, message="A's first results")
    psql = insert_many(db, None, [f"{n} * 2" for n in range(20)])
    wait_for(lambda: not db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0],
             timeout=120, interval=0.1, message="everything to be done")
    after = db.execute("SELECT count(*) FROM tasks WHERE owner = 1 AND finished_at > "
                       "(SELECT max(finished_at) FROM tasks WHERE id = ANY(%s))", (psql,)).fetchone()[0]
    assert after >= 10_000, f"only {after} of A's tasks finished after the psql rows"


def test_a_chunk_of_middling_tasks_does_not_run_on_past_a_newcomer(db, calculators):
    """A fresh Calculator knows nothing of A's tasks' cost, so its first
    chunks are half of the claim each (50 tasks); A's take 0.04 s each,
    less than the 0.1 s after which a running task gives up the rest of its
    chunk. B's quick tasks, inserted while those chunks run, must not wait
    for all of them: a chunk still running 0.1 s after it was sent gives up
    its unstarted tasks, and the Calculator decides again whose come next."""
    calc = calculators(num_processes=2)
    a = insert_many(db, 1, [MIDDLING] * 100)
    wait_for(lambda: len(calc.busy_evaluator_pids()) == 2, timeout=20, message="both processes on A's chunks")
    b = insert_many(db, 2, [f"{n} + 1" for n in range(5)])
    try:
        results = wait_done(db, b, timeout=30)
        assert all(results[i] == ("done", n + 1, None) for n, i in enumerate(b))
        before = db.execute("SELECT count(*) FROM tasks WHERE id = ANY(%s) AND status <> 'pending' AND "
                            "finished_at <= (SELECT max(finished_at) FROM tasks WHERE id = ANY(%s))",
                            (a, b)).fetchone()[0]
        assert before < 50, f"{before} of A's 100 results came before B's last"
    finally:
        cancel_all(db)


# The rule itself, without processes --------------------------------------

def test_a_tenant_arriving_starts_at_the_system_time_and_one_ahead_is_skipped():
    fair = FairShare()
    fair.charge(1, 10.0, now=0.0)
    fair.arrived(2, now=0.5)
    assert fair.effective(2) == fair.effective(1) == 10.0, "no credit for the pause"
    fair.charge(1, 2.0, now=1.0)
    assert fair.ahead({1: fair.effective(1), 2: fair.effective(2)}, now=1.0) == {1}
    fair.charge(2, 2.0 - QUANTUM_SECONDS, now=2.0)
    assert fair.ahead({1: fair.effective(1), 2: fair.effective(2)}, now=2.0) == set()


def test_a_tenant_away_for_a_moment_keeps_its_place():
    """A tenant with a backlog leaves a Calculator between two claims: while
    it is behind, another tenant alone here must not pull it up."""
    fair = FairShare()
    fair.charge(1, 1.0, now=0.0)
    fair.charge(2, 5.0, now=0.0)
    assert fair.ahead({2: fair.effective(2)}, now=1.0) == {2}, "1 is behind, though not here"
    fair.arrived(1, now=1.5)
    assert fair.effective(1) == 1.0
    fair.seen({2}, now=1.5 + ACTIVE_SECONDS)
    fair.arrived(1, now=1.5 + ACTIVE_SECONDS + 0.1)
    assert fair.effective(1) == 5.0, "back after a pause: at the system's virtual time"


def test_a_running_task_counts_but_does_not_move_the_system_time():
    """B arriving while A's long task runs starts where that task started:
    B's quick tasks go before A's next one."""
    fair = FairShare()
    fair.charge(1, 3.0, now=0.0)
    present = {1: fair.effective(1, running_seconds=2.0)}
    fair.seen(present, now=5.0)
    fair.arrived(2, now=5.0)
    assert fair.effective(2) == 3.0
    assert fair.ahead({**present, 2: fair.effective(2)}, now=5.0) == {1}


def test_weights_divide_the_charge():
    fair = FairShare()
    fair.weights = {2: 3.0}
    fair.charge(1, 3.0, now=0.0)
    fair.charge(2, 3.0, now=0.0)
    assert (fair.effective(1), fair.effective(2)) == (3.0, 1.0)
    assert fair.usage(now=0.5, running={2: 1})["2"] == [3.0, 3.0, 1]


def test_a_tenants_room_is_its_quantum_of_cpu_time_past_the_slowest():
    """How much CPU time a tenant may still use before it is ahead: what one
    chunk of its tasks may take (worker/fair_queue.py)."""
    fair = FairShare()
    fair.weights = {2: 3.0}
    fair.charge(1, 1.0, now=0.0)
    fair.charge(2, 3.0, now=0.0)  # both at virtual time 1.0
    assert fair.room(1, fair.effective(1), now=0.5) == pytest.approx(QUANTUM_SECONDS)
    assert fair.room(2, fair.effective(2), now=0.5) == pytest.approx(QUANTUM_SECONDS)
    fair.charge(1, QUANTUM_SECONDS, now=0.6)
    assert fair.room(1, fair.effective(1), now=0.6) == pytest.approx(0.0)
    assert fair.room(2, fair.effective(2), now=0.6) == pytest.approx(QUANTUM_SECONDS)
    fair.busy_others = 1  # another Calculator charges too: each keeps half a quantum
    assert fair.room(2, fair.effective(2), now=0.6) == pytest.approx(QUANTUM_SECONDS / 2)


# MAX_RUNNING_PER_KEY ------------------------------------------------------

SLOW = "(7**(7**7) + 7**(7**7)) % 10"  # about 0.3 s of CPU time; its result is 6


def evaluating(started) -> set:
    """The evaluation processes of these Calculators on the run queue
    (state R): evaluating a task (an idle one waits on its pipe, state S)."""
    pids = set()
    for calc in started:
        for pid in calc.evaluator_pids():
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "R":
                    pids.add(pid)
            except FileNotFoundError:
                continue
    return pids


def test_a_key_never_has_more_tasks_evaluating_than_its_cap(db, calculators):
    """MAX_RUNNING_PER_KEY=1 with 3 Calculators of 2 processes each: A's
    tasks (about 0.3 s of CPU each) are evaluated one at a time across all
    of them. Watched from outside, in /proc, every 20 ms: never two
    evaluation processes on the run queue in two samples running (a process
    that just answered is on it for microseconds; two tasks at once, for a
    tenth of a second and more, whatever the machine's load); and the
    database holds at most one of A's running slots."""
    started = [calculators(num_processes=2, max_running_per_key=1) for _ in range(3)]
    ids = insert_many(db, 1, [SLOW] * 12)
    try:
        samples, slots, deadline = [], [], time.monotonic() + 60
        while db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0]:
            samples.append(evaluating(started))
            slots.append(db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1 "
                                    "AND objid = %s AND objsubid = 2 AND granted", (2**32 - 1,)).fetchone()[0])
            assert time.monotonic() < deadline, "A's 12 tasks took more than 60 s"
            time.sleep(0.02)  # the sampling interval, not a wait for an event
        together = [(a, b) for a, b in zip(samples, samples[1:]) if len(a) > 1 and len(b) > 1 and a & b]
        assert not together, f"{len(together)} pairs of samples with two of A's tasks evaluating: {together[:3]}"
        assert max(len(s) for s in samples) >= 1 and max(slots) == 1, (samples, slots)
        results = wait_done(db, ids)
        assert all(results[i] == ("done", 6, None) for i in ids)
    finally:
        cancel_all(db)


def test_the_charges_of_the_other_calculators_count_here(db, worker_url):
    """What another Calculator charged a tenant (its row's tenant_usage,
    sql/017) moves that tenant's virtual time here: from the second look on,
    by what it charged since the first, over the key's weight."""
    db.execute("UPDATE api_keys SET weight = 2 WHERE id = 2")
    mine, other = uuid.uuid4(), uuid.uuid4()
    for calculator in (mine, other):
        db.execute("INSERT INTO calculators (id, hostname, pid) VALUES (%s, 'here', 1)", (calculator,))
    fair = FairShare()
    with psycopg.connect(worker_url, autocommit=True) as conn:
        db.execute("UPDATE calculators SET tenant_usage = %s WHERE id = %s",
                   (Jsonb({"1": [5.0, 5.0, 1], "2": [4.0, 4.0, 0], "none": [1.0, 1.0, 0]}), other))
        fair.refresh(conn, mine, now=0.0, running={})
        assert fair.virtual == {}, "the first look is only where the others stand"
        db.execute("UPDATE calculators SET tenant_usage = %s WHERE id = %s",
                   (Jsonb({"1": [7.0, 7.0, 1], "2": [10.0, 10.0, 0], "none": [1.5, 1.5, 0]}), other))
        fair.charge(1, 1.0, now=1.0)
        fair.refresh(conn, mine, now=1.0, running={1: 1})
        assert fair.weights == {2: 2.0}
        assert fair.virtual == {1: 3.0, 2: 3.0, None: 0.5}
        published = db.execute("SELECT tenant_usage FROM calculators WHERE id = %s", (mine,)).fetchone()[0]
        assert published == {"1": [1.0, 1.0, 1]}
        # Between looks, what the other probably charged since, at its last
        # rate (2 s a second of key 1's over the last interval), counts too;
        # for at most two intervals.
        assert fair.effective(1, now=1.5) == pytest.approx(3.0 + 1.0)
        assert fair.effective(2, now=1.5) == pytest.approx(3.0 + 3.0 / 2)
        assert fair.effective(1, now=9.0) == pytest.approx(3.0 + 4.0)
        assert fair.busy_others == 1


# Found from outside ---------------------------------------------------------

def test_a_heavy_keys_runaways_do_not_hold_back_a_light_keys_bulk_nor_psql_rows(db, calculators):
    """A (weight 20) has a backlog of runaways, every process on one; B
    (weight 1) sends 200 quick tasks and psql 100 rows. Each runaway of A's
    (2.5 s) is worth 2.5 / 20 s of B's and of psql's time, which covers their
    quick tasks: done within CALCULATION_TIMEOUT + 3 s. (When "ahead" meant a
    fixed 0.5 s of virtual time, a runaway moved A by 0.125 s, A was ahead
    only after four of them, and B's later tasks waited behind A's
    handed-back ones: 8 of B's still pending after 100 s.) With weight 1,000
    A is owed 1,000 times their time, and they get it: 2.5 ms a runaway."""
    db.execute("UPDATE api_keys SET weight = 20 WHERE id = 1")
    bulk, psql = bulk_and_psql_beside_runaways(db, calculators, 1, runaways=300, bulk=200, rows=100)
    try:
        wait_done(db, bulk + psql, timeout=BOUND + 10)
        assert_within_bound(db, bulk, psql)
    finally:
        cancel_all(db)


def test_a_round_set_by_hand_far_ahead_does_not_push_back_the_keys_later_tasks(db, make_app):
    """One psql row of key 2 with fair_round 10**12 (a dump re-inserted, say):
    its later tasks, from psql and from the API, still stand near the queue's
    head, not behind that round."""
    from api.keys import create_key
    from tests.test_auth import bearer
    key = create_key(db, "bee")
    owner = int(key.split("_")[1])
    insert_many(db, 1, ["1"] * 50)
    db.execute("INSERT INTO tasks (expression, owner, fair_round) VALUES ('1 + 1', %s, 1000000000000)", (owner,))
    later = insert_many(db, owner, ["2 + 2"] * 3)
    client = make_app(AUTH="required").test_client()
    response = client.post("/api/expressions", json={"items": [{"expression": "3 + 3"}] * 3}, headers=bearer(key))
    assert response.status_code == 202, response.get_data(as_text=True)
    rounds = [r[0] for r in db.execute("SELECT fair_round FROM tasks WHERE expression IN ('2 + 2', '3 + 3') "
                                       "ORDER BY id")]
    next_id = db.execute("SELECT max(id) + 1 FROM tasks").fetchone()[0]
    assert len(rounds) == 6 and max(rounds) <= next_id, rounds
    assert later


def test_a_calculator_whose_heartbeat_lapsed_is_not_charged_twice(db, worker_url):
    """Another Calculator charged A 100 s; its heartbeat lapses (its row is
    not live for a while), then it comes back having charged 1 s more: A
    moves by 1 s here, not by its whole 101 s."""
    mine, other = uuid.uuid4(), uuid.uuid4()
    for calculator in (mine, other):
        db.execute("INSERT INTO calculators (id, hostname, pid) VALUES (%s, 'here', 1)", (calculator,))
    fair = FairShare()
    with psycopg.connect(worker_url, autocommit=True) as conn:
        db.execute("UPDATE calculators SET tenant_usage = %s WHERE id = %s", (Jsonb({"1": [100.0, 50.0, 1]}), other))
        fair.refresh(conn, mine, now=0.0, running={})
        db.execute("UPDATE calculators SET heartbeat_at = now() - interval '20 s' WHERE id = %s", (other,))
        fair.refresh(conn, mine, now=2.0, running={})
        db.execute("UPDATE calculators SET heartbeat_at = now(), tenant_usage = %s WHERE id = %s",
                   (Jsonb({"1": [101.0, 50.0, 1]}), other))
        fair.refresh(conn, mine, now=3.0, running={})
        assert fair.virtual == {1: 1.0}


def test_calculators_with_different_caps_say_so(db, calculators):
    """MAX_RUNNING_PER_KEY must be the same on every Calculator: one that
    sees another value says so in its log."""
    first = calculators(max_running_per_key=1)
    second = calculators(max_running_per_key=3)
    insert_many(db, 1, [SLOW] * 4)
    try:
        # The one started second says so at its start; either, while it has work.
        wait_for(lambda: "MAX_RUNNING_PER_KEY is 3 here but 1 on calculator" in second.log()
                 or "MAX_RUNNING_PER_KEY is 1 here but 3 on calculator" in first.log(), timeout=30,
                 message="the warning")
    finally:
        cancel_all(db)


def test_an_idle_calculator_brings_its_last_minute_down_to_nothing():
    """The panel's shares come from the last minute's figures: a Calculator
    that fell idle goes on sharing until they are empty, not leaving its
    last busy second on show."""
    fair = FairShare()
    fair.charge(1, 2.0, now=10.0)
    fair._dirty, fair._others = False, {}  # shared, and the others looked at
    assert fair.refresh_due(11.0, active=False)
    assert fair.usage(now=71.5, running={}) == {"1": [2.0, 0.0, 0]}
    assert not fair.refresh_due(72.0, active=False)
