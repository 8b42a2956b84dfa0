"""The queue beside a held snapshot (pg_dump, a long report, a client idle in
transaction): no row version that died after the snapshot began can be
removed, so every index entry of every task finished since stays in the
queue's index. The claim and the fair round given at insert must not walk
them (sql/011_claims_skip_what_is_finished.sql, worker/claim_frontier.py)."""

from __future__ import annotations

import psycopg
import pytest

from tests.test_retention import _index_tuples_read
from worker.claim_frontier import HEAD, ClaimFrontier
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


def test_new_tasks_of_a_key_say_where_they_stand_in_their_notification(db, database_url):
    """The Calculators' claims walk from their frontier: a key's new tasks
    placed before it (at the queue's head) must say so, from psql (the
    trigger) and from the API (its NOTIFY after the commit); rows without
    an owner, placed by id past every claim, say nothing."""
    db.execute("INSERT INTO api_keys (name, secret_sha256) VALUES ('a', sha256('a'))")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tasks_inserted")
        db.execute("INSERT INTO tasks (expression, owner) VALUES ('1', 1), ('2', 1)")
        db.execute("INSERT INTO tasks (expression) VALUES ('3')")
        first_round = db.execute("SELECT min(fair_round) FROM tasks").fetchone()[0]
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
        assert payloads == [str(first_round), ""]

        # The API: admission gives the round inside its INSERT, and the API
        # sends the NOTIFY itself after the commit, on the same session.
        from api.db import NOTIFY_TASKS_INSERTED
        with psycopg.connect(database_url, autocommit=True) as api:
            api_round = api.execute("SELECT first_round FROM admit_submission(1, 1, 0, 0, 0, 0, 0)").fetchone()[0]
            api.execute(NOTIFY_TASKS_INSERTED)
            api.execute(NOTIFY_TASKS_INSERTED)  # nothing given out since: ''
        assert [n.payload for n in listener.notifies(timeout=2, stop_after=2)] == [str(api_round), ""]


def test_the_frontier_starts_past_the_last_claim_and_moves_back_for_what_is_placed_before_it():
    frontier = ClaimFrontier()
    assert frontier.start(0.0) == HEAD  # nothing claimed yet
    frontier.claimed(HEAD, [(5, 5), (7, 9), (6, 6)], now=0.0, seconds=0.01)
    assert frontier.start(0.5) == (7, 9)
    frontier.claimed((7, 9), [(8, 10)], now=0.5, seconds=0.001)
    assert frontier.start(0.6) == (8, 10)
    frontier.heard("")  # rows without an owner: placed past every claim
    assert frontier.start(0.6) == (8, 10)
    frontier.heard("3")  # a key's new tasks at place 3
    assert frontier.start(0.6) < (3, -(2**62))
    frontier.claimed(frontier.start(0.6), [(3, 11)], now=0.6, seconds=0.001)
    assert frontier.start(0.7) == (3, 11), "the next claim goes on from there"
    frontier.claimed((3, 11), [(9, 13)], now=0.7, seconds=0.001)
    frontier.heard("4,12")  # a task handed back at place 4, id 12
    assert frontier.start(0.7) == (4, 11)
    frontier.heard("nonsense")  # anyone may NOTIFY: walk from the head
    assert frontier.start(0.7) == HEAD
    # A walk from the head at most every second, and at most 1/20 of the time.
    frontier.claimed(HEAD, [(20, 20)], now=1.0, seconds=0.2)
    assert frontier.start(4.9) == (20, 20) and frontier.start(5.0) == HEAD
