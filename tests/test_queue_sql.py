"""The queue's guarantees, held by SQL, tested on the real database."""

from __future__ import annotations


import psycopg
import pytest

from tests.support import run_in_threads, insert, outcome
from worker.task_queue import (Outcome, claim_tasks, extend_leases, release_tasks,
                               store_results)

LEASE = 30


def claim(conn, limit=10, lease=LEASE, max_attempts=5):
    return claim_tasks(conn, limit, lease, max_attempts)


def expire_leases(conn):
    conn.execute("UPDATE tasks SET process_at = now() - interval '1 second' WHERE status = 'pending'")


def test_claims_oldest_first_up_to_the_limit(db):
    ids = [insert(db, f"{i}+1") for i in range(5)]
    tasks, given_up = claim(db, limit=3)
    assert [t.id for t in tasks] == ids[:3] and given_up == []
    assert [t.expression for t in tasks] == ["0+1", "1+1", "2+1"]
    rows = db.execute("SELECT attempts, process_at > now() FROM tasks WHERE id = ANY(%s)", (ids[:3],))
    assert rows.fetchall() == [(1, True)] * 3
    assert [t.id for t in claim(db)[0]] == ids[3:]
    assert claim(db)[0] == []


def test_concurrent_claimers_skip_each_others_rows(db, database_url):
    for i in range(50):
        insert(db, f"{i}")
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        # Both claims run inside open transactions: the first one's row locks
        # are held while the second one claims. A claim that waited for them
        # instead of skipping them fails after a second rather than hang.
        second.execute("SET lock_timeout = '1s'")
        a, _ = claim(first, limit=30)
        b, _ = claim(second, limit=30)
        assert len(a) == 30 and len(b) == 20
        assert not {t.id for t in a} & {t.id for t in b}


def test_many_claimers_in_parallel_never_share_a_task(db, database_url):
    for i in range(400):
        insert(db, f"{i}")
    claimed: list[list[int]] = []

    def claimer():
        mine = []
        with psycopg.connect(database_url, autocommit=True) as conn:
            while True:
                tasks, _ = claim(conn, limit=7)
                if not tasks:
                    break
                mine += [t.id for t in tasks]
        claimed.append(mine)

    run_in_threads(claimer, 6)
    everything = [task_id for mine in claimed for task_id in mine]
    assert sorted(everything) == list(range(1, 401))


def test_a_leased_task_is_taken_again_only_after_its_lease_expires(db):
    task_id = insert(db, "1+1")
    first, _ = claim(db, lease=LEASE)
    assert claim(db)[0] == []
    expire_leases(db)
    second, _ = claim(db)
    assert [t.id for t in second] == [task_id]
    assert second[0].lease_token != first[0].lease_token
    assert db.execute("SELECT attempts FROM tasks").fetchone()[0] == 2


def test_a_stale_result_is_rejected_per_task_and_the_rest_of_the_batch_kept(db):
    a, b = insert(db, "1+1"), insert(db, "2+2")
    late_batch, _ = claim(db)
    # The lease of task a expires and another Calculator takes it over.
    db.execute("UPDATE tasks SET process_at = now() - interval '1 second' WHERE id = %s", (a,))
    takeover, _ = claim(db)
    assert [t.id for t in takeover] == [a]
    stored = store_results(db, [Outcome(t, "999", None) for t in late_batch])
    assert stored == {b}
    assert outcome(db, a) == ("pending", None, None)
    assert outcome(db, b) == ("done", 999, None)
    assert store_results(db, [Outcome(takeover[0], "2", None)]) == {a}
    assert outcome(db, a) == ("done", 2, None)


def test_exactly_one_outcome_ever(db):
    task_id = insert(db, "1+1")
    tasks, _ = claim(db)
    assert store_results(db, [Outcome(tasks[0], "2", None)]) == {task_id}
    # The same claim cannot store twice, nor overwrite with an error.
    assert store_results(db, [Outcome(tasks[0], None, "boom")]) == set()
    assert outcome(db, task_id) == ("done", 2, None)
    # A finished task is never claimed again, even with an old lease.
    expire_leases(db)
    assert claim(db)[0] == []


def test_the_schema_refuses_inconsistent_outcomes(db):
    task_id = insert(db, "1")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE tasks SET status = 'done' WHERE id = %s", (task_id,))
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE tasks SET status = 'finished' WHERE id = %s", (task_id,))


def test_an_expired_lease_not_yet_taken_over_may_still_store(db):
    """The token, not the clock, decides: nobody else has the task, and the
    result is correct, so keeping it saves a recomputation."""
    task_id = insert(db, "1+1")
    tasks, _ = claim(db)
    expire_leases(db)
    assert store_results(db, [Outcome(tasks[0], "2", None)]) == {task_id}


def test_extending_a_lease_keeps_the_task(db):
    insert(db, "1")
    tasks, _ = claim(db, lease=1)
    extend_leases(db, tasks, 60)
    left = db.execute("SELECT process_at - now() > interval '50 seconds' FROM tasks").fetchone()[0]
    assert left


def test_extending_leases_passes_over_a_locked_row_without_waiting(db, database_url):
    """A row another session holds locked (a store, a cancel, psql) is skipped
    this round, not waited for: with a lock timeout of 0 a wait would fail
    at once (lock_timeout = 1 ms; SKIP LOCKED never waits)."""
    insert(db, "1"), insert(db, "2")
    tasks, _ = claim(db, lease=1)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (tasks[0].id,))
        db.execute("SET lock_timeout = '1ms'")
        try:
            extend_leases(db, tasks, 60)
        finally:
            db.execute("RESET lock_timeout")
        holder.rollback()
    extended = db.execute("SELECT id, process_at - now() > interval '50 seconds' FROM tasks ORDER BY id").fetchall()
    assert extended == [(tasks[0].id, False), (tasks[1].id, True)]


def test_release_makes_tasks_claimable_now(db):
    task_id = insert(db, "1")
    tasks, _ = claim(db)
    assert release_tasks(db, tasks, count_attempt=False) == {task_id}
    assert db.execute("SELECT attempts, lease_token FROM tasks").fetchone() == (0, None)
    again, _ = claim(db)
    assert [t.id for t in again] == [task_id]
    assert release_tasks(db, again, count_attempt=True) == {task_id}
    assert db.execute("SELECT attempts FROM tasks").fetchone()[0] == 1
    # A release with a stale token does nothing.
    assert release_tasks(db, again, count_attempt=True) == set()


def test_a_task_that_keeps_killing_its_process_is_given_up(db):
    task_id = insert(db, "fac(10**7)")
    for _ in range(3):
        tasks, given_up = claim(db, max_attempts=3)
        assert [t.id for t in tasks] == [task_id] and given_up == []
        expire_leases(db)  # the Calculator died holding it
    tasks, given_up = claim(db, max_attempts=3)
    assert tasks == [] and given_up == [task_id]
    status, result, error = outcome(db, task_id)
    assert status == "error" and error.startswith("gave up after 3 attempts")


def test_one_notification_per_insert_statement(db, database_url):
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_inserted")
        db.execute("INSERT INTO tasks (expression) SELECT g::text FROM generate_series(1, 500) g")
        insert(db, "1")
        received = list(listener.notifies(timeout=1.0, stop_after=3))
    assert [n.channel for n in received] == ["tasks_inserted", "tasks_inserted"]


def test_a_session_that_notifies_after_commit_is_not_notified_for_by_the_trigger(db, database_url):
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_inserted")
        db.execute("SET calculator.notify_after_commit = on")
        insert(db, "1")
        assert list(listener.notifies(timeout=0.3)) == []
        db.execute("SELECT pg_notify('tasks_inserted', '')")
        assert len(list(listener.notifies(timeout=1, stop_after=1))) == 1
        db.execute("RESET calculator.notify_after_commit")
        insert(db, "2")
        assert len(list(listener.notifies(timeout=1, stop_after=1))) == 1


def test_a_locked_row_is_passed_over_and_the_rest_of_the_batch_stored(db, database_url):
    from worker.task_queue import store_outcomes
    a, b, c = insert(db, "1"), insert(db, "2"), insert(db, "3")
    tasks, _ = claim(db)
    db.execute("UPDATE tasks SET process_at = now() - interval '1 second' WHERE id = %s", (c,))
    claim(db)  # c is taken over: its outcome below is stale
    db.execute("SET lock_timeout = '200ms'")  # the Calculator's LOCK_TIMEOUT, shortened
    with psycopg.connect(database_url) as operator:  # an open transaction holding a's row
        operator.execute("SELECT FROM tasks WHERE id = %s FOR UPDATE", (a,))
        stored, locked = store_outcomes(db, [Outcome(t, str(t.id), None) for t in tasks])
        assert (stored, locked) == ({b}, {a})
    assert store_outcomes(db, [Outcome(tasks[0], "1", None)], skip_locked=True) == ({a}, set())
    assert [outcome(db, i)[0] for i in (a, b, c)] == ["done", "done", "pending"]
