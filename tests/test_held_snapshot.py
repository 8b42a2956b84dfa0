"""The queue beside a held snapshot (pg_dump, a long report, a client idle in
transaction): no row version that died after the snapshot began can be
removed, so every index entry of every task finished since stays in the
queue's index. The claim and the fair round given at insert must not walk
them (sql/011_claims_skip_what_is_finished.sql, worker/claim_frontier.py)."""

from __future__ import annotations

import psycopg
import pytest

import time

from tests.support import wait_done
from tests.test_retention import _index_tuples_read
from worker.claim_frontier import HEAD, QUEUE_HEAD, ClaimFrontier
from worker.task_queue import Outcome, claim_tasks, store_results

FINISHED = 3000  # tasks finished while the snapshot is held


@pytest.fixture
def held_snapshot(database_url, db):
    """A session in REPEATABLE READ that has read tasks, left open."""
    with psycopg.connect(database_url) as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM tasks")
        yield holder
        holder.rollback()


def drain(conn, after=HEAD) -> tuple[int, int]:
    """Claim and store everything claimable, each claim starting past the
    last one; returns the place of the last task claimed."""
    while True:
        tasks, _ = claim_tasks(conn, 500, 30, 5, after=after)
        if not tasks:
            return after
        store_results(conn, [Outcome(t, "1", None) for t in tasks])
        after = max((t.fair_round, t.id) for t in tasks)


def entries_read_by(conn, action) -> int:
    with conn.transaction():
        before = _index_tuples_read(conn)
        action()
        return _index_tuples_read(conn) - before


def test_a_claim_past_the_frontier_does_not_walk_what_finished_beside_a_held_snapshot(db, worker_url,
                                                                                       held_snapshot):
    db.execute("INSERT INTO tasks (expression) SELECT '1' FROM generate_series(1, %s)", (FINISHED,))
    with psycopg.connect(worker_url, autocommit=True) as worker:
        frontier = drain(worker)
        db.execute("INSERT INTO tasks (expression) SELECT '2' FROM generate_series(1, 10)")
        claimed = []
        past_frontier = entries_read_by(worker, lambda: claimed.extend(
            claim_tasks(worker, 5, 30, 5, after=frontier)[0]))
        from_head = entries_read_by(worker, lambda: claimed.extend(claim_tasks(worker, 5, 30, 5)[0]))
    assert [t.expression for t in claimed] == ["2"] * 10, "both claims found the new tasks"
    assert past_frontier <= 20, f"{past_frontier} index entries read past the frontier"
    # The contrast: the walk from the index's head reads every finished task's entry.
    assert from_head >= FINISHED, f"only {from_head} index entries read from the head"


def test_a_keys_round_is_found_without_walking_what_finished_beside_a_held_snapshot(db, worker_url,
                                                                                    held_snapshot):
    """next_fair_round(): the queue's head from the low-water mark, and the
    key's newest pending round, both without walking the key's finished
    tasks (the head's walk from the index's head, and the key's backward
    walk, read every one of them)."""
    db.execute("INSERT INTO api_keys (name, secret_sha256) VALUES ('a', sha256('a')), ('b', sha256('b'))")
    db.execute("INSERT INTO tasks (expression, owner) SELECT '1', 1 FROM generate_series(1, %s)", (FINISHED,))
    with psycopg.connect(worker_url, autocommit=True) as worker:
        drain(worker)
    db.execute("INSERT INTO tasks (expression, owner) VALUES ('2', 2)")  # the queue's head now
    head = db.execute("SELECT fair_round FROM tasks WHERE expression = '2'").fetchone()[0]
    with psycopg.connect(db.info.dsn) as conn:
        rounds = []
        read = entries_read_by(conn, lambda: rounds.append(
            conn.execute("SELECT next_fair_round(1), next_fair_round(2)").fetchone()))
    assert rounds == [(head, head + 1)], "key 1 starts at the head, key 2 after its pending task"
    assert read <= 20, f"{read} index entries read"


def test_every_insert_says_where_its_earliest_task_stands_in_its_notification(db, database_url):
    """The Calculators' claims walk from their frontier: new tasks placed
    before it must say so, from psql (the trigger) and from the API (its
    NOTIFY after the commit): a key's tasks placed at the queue's head, and
    a row without an owner whose transaction commits after one with a
    higher id was claimed."""
    db.execute("INSERT INTO api_keys (name, secret_sha256) VALUES ('a', sha256('a'))")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_inserted")
        db.execute("INSERT INTO tasks (expression, owner) VALUES ('1', 1), ('2', 1)")
        first_round = db.execute("SELECT min(fair_round) FROM tasks").fetchone()[0]
        with psycopg.connect(database_url) as late:  # commits after a higher id
            late_id = late.execute("INSERT INTO tasks (expression) VALUES ('3') RETURNING id").fetchone()[0]
            db.execute("INSERT INTO tasks (expression) VALUES ('4')")
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=3)]
        place = dict(db.execute("SELECT expression, coalesce(fair_round, id) FROM tasks").fetchall())
        assert payloads == [str(first_round), str(place["4"]), str(place["3"])]
        assert place["3"] <= place["4"], "the late row stands before the one that committed first"

        # The API sends the NOTIFY itself after its commit, on the same session.
        from api.db import NOTIFY_TASKS_INSERTED
        with psycopg.connect(database_url, autocommit=True) as api:
            api.execute("SET calculator.notify_after_commit = on")
            api.execute("INSERT INTO tasks (expression, owner) VALUES ('5', 1), ('6', 1)")
            api.execute("INSERT INTO tasks (expression) VALUES ('7')")
            api_round = db.execute("SELECT min(fair_round) FROM tasks WHERE expression = '5'").fetchone()[0]
            api.execute(NOTIFY_TASKS_INSERTED)
            api.execute(NOTIFY_TASKS_INSERTED)  # nothing inserted since: ''
        assert [n.payload for n in listener.notifies(timeout=2, stop_after=2)] == [str(api_round), ""]


def test_the_frontier_starts_past_the_last_claim_and_moves_back_for_what_is_placed_before_it():
    frontier = ClaimFrontier()
    assert frontier.start(0.0) == HEAD  # the first claim walks the whole index
    frontier.claimed(HEAD, [], now=0.0, seconds=0.01)
    frontier.heard("2")  # nothing claimed yet: from the notification's place
    assert frontier.start(0.0) == (2, -(2**63))
    frontier.claimed((2, -(2**63)), [(5, 5), (7, 9), (6, 6)], now=0.0, seconds=0.01)
    assert frontier.start(0.0, polling=True) == HEAD  # the fallback poll of an idle Calculator
    assert frontier.start(0.5) == (7, 9)
    frontier.claimed((7, 9), [(8, 10)], now=0.5, seconds=0.001)
    assert frontier.start(0.6) == (8, 10)
    frontier.heard("")
    assert frontier.start(0.6) == (8, 10)
    frontier.heard("3")  # new tasks, the earliest at place 3
    assert frontier.start(0.6) < (3, -(2**62))
    frontier.claimed(frontier.start(0.6), [(3, 11)], now=0.6, seconds=0.001)
    assert frontier.start(0.7) == (3, 11), "the next claim goes on from there"
    frontier.claimed((3, 11), [(9, 13)], now=0.7, seconds=0.001)
    frontier.heard("4,12")  # a task handed back at place 4, id 12
    assert frontier.start(0.7) == (4, 11)
    frontier.heard("-99999999999999999999")  # past a bigint: nothing the service sends
    assert frontier.start(0.7) is QUEUE_HEAD
    frontier.claimed(QUEUE_HEAD, [(9, 13)], now=0.7, seconds=0.001)
    frontier.heard("5,-9223372036854775808")  # at the very start of place 5
    assert frontier.start(0.7) == (5, -(2**63))
    frontier.heard("nonsense")  # anyone may NOTIFY: walk from the queue's head
    assert frontier.start(0.7) is QUEUE_HEAD
    # From the queue's head at most every second, and at most 1/20 of the time.
    frontier.claimed(QUEUE_HEAD, [(20, 20)], now=1.0, seconds=0.06)
    assert frontier.start(2.1) == (20, 20) and frontier.start(2.2) is QUEUE_HEAD
    frontier.claimed(QUEUE_HEAD, [(20, 20)], now=3.0, seconds=0.5)  # but at least every 2 s
    assert frontier.start(4.9) == (20, 20) and frontier.start(5.0) is QUEUE_HEAD
    # ... but a notification's place first: the queue's head may have passed
    # a task whose transaction committed late.
    frontier.heard("15")
    assert frontier.start(5.0) == (15, -(2**63))
    frontier.claimed((15, -(2**63)), [(16, 30)], now=5.0, seconds=0.001)
    assert frontier.start(5.0) is QUEUE_HEAD
    # From the index's very head once a minute.
    assert frontier.start(60.0) == HEAD
    frontier.claimed(HEAD, [], now=60.0, seconds=0.01)
    assert frontier.start(60.5) == (16, 30) and frontier.start(119.9) != HEAD


def test_a_claim_from_the_queues_head_does_not_walk_what_finished_before_it(db, worker_url, held_snapshot):
    """The walk now and then for expired leases starts at the queue's head
    (its oldest pending task), not at the index's: the tasks finished before
    it are not visited."""
    db.execute("INSERT INTO tasks (expression) SELECT '1' FROM generate_series(1, %s)", (FINISHED,))
    with psycopg.connect(worker_url, autocommit=True) as worker:
        drain(worker)
        db.execute("INSERT INTO tasks (expression) VALUES ('9**9**9')")
        (runaway,), _ = claim_tasks(worker, 1, 30, 5, after=QUEUE_HEAD)
        db.execute("UPDATE tasks SET process_at = now() WHERE id = %s", (runaway.id,))  # its lease ran out
        claimed = []
        from_queue_head = entries_read_by(worker, lambda: claimed.extend(
            claim_tasks(worker, 5, 30, 5, after=QUEUE_HEAD)[0]))
        db.execute("UPDATE tasks SET process_at = now() WHERE id = %s", (runaway.id,))
        from_index_head = entries_read_by(worker, lambda: claimed.extend(claim_tasks(worker, 5, 30, 5)[0]))
    assert [t.id for t in claimed] == [runaway.id, runaway.id], "the expired lease is found both ways"
    assert from_queue_head <= 20, f"{from_queue_head} index entries read from the queue's head"
    assert from_index_head >= FINISHED, f"only {from_index_head} index entries read from the index's head"


def test_the_queue_figures_do_not_walk_what_finished_beside_a_held_snapshot(db, worker_url, request):
    """GET /api/stats (everyone's, and a key's own) counts the pending tasks
    from the queue's head, not from the first entry of the index."""
    from core.database import load_query
    db.execute("INSERT INTO api_keys (name, secret_sha256) VALUES ('a', sha256('a'))")
    # Statistics of a long history of one key's finished tasks, kept across
    # the TRUNCATE (as the full suite left them): the planner then took the
    # index of everyone's pending tasks for a key's count.
    db.execute("INSERT INTO tasks (expression, status, result, finished_at, owner, fair_round) "
               "SELECT '1', 'done', '1', now(), 1, 1 FROM generate_series(1, 40000)")
    db.execute("ANALYZE tasks")
    db.execute("TRUNCATE tasks RESTART IDENTITY")
    request.getfixturevalue("held_snapshot")  # from here on (a TRUNCATE would wait for it)
    db.execute("INSERT INTO tasks (expression, owner) SELECT '1', 1 FROM generate_series(1, %s)", (FINISHED,))
    with psycopg.connect(worker_url, autocommit=True) as worker:
        drain(worker)
    db.execute("INSERT INTO tasks (expression, owner) SELECT '2', 1 FROM generate_series(1, 7)")
    db.execute("INSERT INTO tasks (expression) SELECT '3' FROM generate_series(1, 3)")
    with psycopg.connect(db.info.dsn) as conn:
        conn.execute("SELECT queue_head()")  # the mark follows the head as it is asked for
        conn.commit()
        figures = []
        read = entries_read_by(conn, lambda: figures.extend([
            conn.execute(load_query("queue_stats")).fetchone()[0],
            conn.execute(load_query("owner_stats"), {"owner": 1}).fetchone()[0]]))
    assert figures == [10, 7], "the queued tasks, everyone's and the key's"
    assert read <= 60, f"{read} index entries read"


def test_a_low_water_mark_past_every_task_moves_back(db):
    """The mark set past every id (the ids restarted, or a hand on the
    sequence) moves back to the next id at the first look: keys' rounds and
    the queue figures are those of the tasks there are."""
    from core.database import load_query
    db.execute("INSERT INTO api_keys (name, secret_sha256) VALUES ('a', sha256('a'))")
    db.execute("SELECT setval('tasks_queue_head', 1000000000)")
    db.execute("INSERT INTO tasks (expression, owner) SELECT '1', 1 FROM generate_series(1, 5)")
    db.execute("INSERT INTO tasks (expression) VALUES ('2')")
    assert db.execute("SELECT array_agg(fair_round ORDER BY id) FROM tasks WHERE owner = 1").fetchone()[0] \
        == [1, 2, 3, 4, 5]
    assert db.execute(load_query("queue_stats")).fetchone()[0] == 6
    assert db.execute(load_query("owner_stats"), {"owner": 1}).fetchone()[0] == 5


def test_a_task_whose_transaction_commits_late_is_picked_up_at_once(db, database_url, calculators):
    """Found from outside: a psql INSERT left open while others' tasks came
    and went, committed after the queue's low-water mark had passed its
    place, waited for the walk from the index's head (up to a minute). Its
    notification names its place, and the next claim walks from there."""
    calc = calculators()
    with psycopg.connect(database_url) as late:
        late_id = late.execute("INSERT INTO tasks (expression) VALUES ('40 + 2') RETURNING id").fetchone()[0]
        others = [r[0] for r in db.execute("INSERT INTO tasks (expression) SELECT '1' FROM generate_series(1, 20) "
                                           "RETURNING id")]
        wait_done(db, others)
        db.execute("SELECT queue_head()")  # the mark moves past the open transaction's row
        assert db.execute("SELECT last_value FROM tasks_queue_head").fetchone()[0] > late_id
        # A walk from the queue's head is due again after a second: the claim
        # the notification brings must not be that walk.
        time.sleep(1.5)
    # committed here
    # The walk from the index's head would find it after a minute.
    assert wait_done(db, [late_id], timeout=15)[late_id][0] == "done"
    assert calc.process.poll() is None


def test_the_walk_from_the_index_head_sets_the_low_water_mark_right(db):
    """A mark past a pending task (it committed late) leaves it out of the
    figures until the once-a-minute walk from the index's head sets it right."""
    from core.database import load_query
    task_id = db.execute("INSERT INTO tasks (expression) VALUES ('1') RETURNING id").fetchone()[0]
    db.execute("INSERT INTO tasks (expression) VALUES ('2')")
    db.execute("SELECT setval('tasks_queue_head', %s)", (task_id + 1,))
    assert db.execute(load_query("queue_stats")).fetchone()[0] == 1
    assert db.execute("SELECT reset_queue_head()").fetchone()[0] == task_id
    assert db.execute(load_query("queue_stats")).fetchone()[0] == 2


def test_a_round_set_far_ahead_by_psql_neither_hides_new_tasks_nor_overflows(db):
    """Found from outside: one psql row with fair_round 10^15 set the queue's
    head there (new rows without an owner were left out of the figures and of
    the walks from the head, and a key's rounds started there), and a round
    near the largest bigint made a key's next round overflow."""
    from core.database import load_query
    db.execute("INSERT INTO tasks (expression, fair_round) VALUES ('1', 1000000000000000)")
    new = db.execute("INSERT INTO tasks (expression) VALUES ('2') RETURNING id").fetchone()[0]
    assert db.execute("SELECT queue_head()").fetchone()[0] <= new
    assert db.execute(load_query("queue_stats")).fetchone()[0] == 2
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO tasks (expression, fair_round) VALUES ('1', 9223372036854775806)")
