"""Bounded history: RESULT_RETENTION, 410 for expired ids, outcome counters."""

from __future__ import annotations

import re

import psycopg
import pytest

from core.settings import CalculatorSettings, SettingsError
from tests.support import insert, wait_done, wait_for

MAINTAIN = "SELECT tasks_maintenance(%s::interval, %s)"


def finished(db, age: str, status: str = "done") -> int:
    """A task that finished `age` ago, stored the way a Calculator does (an UPDATE)."""
    task_id = insert(db, "1+1")
    db.execute(
        "UPDATE tasks SET status = %s, result = CASE WHEN %s = 'done' THEN '2'::jsonb END, "
        "error = CASE WHEN %s = 'error' THEN 'x' END, finished_at = now() - %s::interval, "
        "created_at = now() - %s::interval - interval '1 second' WHERE id = %s",
        (status, status, status, age, age, task_id))
    return task_id


def stuck_pending(db, age: str) -> int:
    """A pending task submitted `age` ago, leased to a Calculator that went away."""
    task_id = insert(db, "2+2")
    db.execute("UPDATE tasks SET created_at = now() - %s::interval, process_at = now() + interval '1 hour', "
               "lease_token = gen_random_uuid(), attempts = 1 WHERE id = %s", (age, task_id))
    return task_id


def ids_in(db) -> set[int]:
    return {row[0] for row in db.execute("SELECT id FROM tasks")}


@pytest.mark.parametrize("raw, seconds", [
    (None, 7 * 86400), ("0", 0), ("3600", 3600), ("90s", 90), ("15m", 900), ("12h", 43200),
    ("7d", 604800), ("1.5h", 5400), (" 2D ", 172800),
])
def test_result_retention_is_a_duration(raw, seconds):
    environ = {} if raw is None else {"RESULT_RETENTION": raw}
    assert CalculatorSettings.from_env(environ).result_retention == seconds


@pytest.mark.parametrize("raw", ["abc", "-1d", "7w", "d", "nan", "inf"])
def test_a_bad_result_retention_is_refused_with_the_accepted_forms(raw):
    with pytest.raises(SettingsError, match="RESULT_RETENTION must be a duration such as 3600, 90s, 15m"):
        CalculatorSettings.from_env({"RESULT_RETENTION": raw})


def test_maintenance_deletes_only_old_finished_tasks_in_batches(db):
    old = [finished(db, "8 days"), finished(db, "9 days", "error"), finished(db, "10 days")]
    recent = finished(db, "1 day")
    pending = stuck_pending(db, "30 days")
    assert db.execute(MAINTAIN, ("7 days", 2)).fetchone()[0] == 2, "a batch is at most batch_size rows"
    assert old[2] not in ids_in(db) and old[1] not in ids_in(db), "oldest first"
    assert db.execute(MAINTAIN, ("7 days", 2)).fetchone()[0] == 1
    assert db.execute(MAINTAIN, ("7 days", 2)).fetchone()[0] == 0
    assert ids_in(db) == {recent, pending}
    assert db.execute("SELECT purged_through, kept_for FROM task_retention").fetchone()[0] == max(old)
    assert db.execute(MAINTAIN, (None, 100)).fetchone()[0] == 0, "NULL keeps everything"
    with pytest.raises(psycopg.errors.RaiseException, match="keep must be a positive interval"):
        db.execute(MAINTAIN, ("0 seconds", 10))


def test_one_session_at_a_time_does_the_maintenance(db, database_url):
    finished(db, "8 days")
    # A statement timeout: a second session that waited for the first would fail, not hang.
    with psycopg.connect(database_url) as first, \
            psycopg.connect(database_url, autocommit=True, options="-c statement_timeout=5000") as second:
        assert first.execute(MAINTAIN, ("7 days", 10)).fetchone()[0] == 1  # its transaction stays open
        assert second.execute(MAINTAIN, ("7 days", 10)).fetchone()[0] == -1, "the other one does not wait"
        first.rollback()
        assert second.execute(MAINTAIN, ("7 days", 10)).fetchone()[0] == 1


def test_two_calculators_purge_exactly_the_old_finished_tasks(db, calculators):
    old = [finished(db, "2 hours") for _ in range(30)] + [finished(db, "3 hours", "error")]
    kept = [finished(db, "10 minutes"), stuck_pending(db, "5 hours")]
    first, second = calculators(result_retention="1h"), calculators(result_retention="1h")
    wait_for(lambda: not (set(old) & ids_in(db)), timeout=20, message="the old tasks to be deleted")
    assert ids_in(db) == set(kept)
    fresh = insert(db, "6*7")
    assert wait_done(db, [fresh])[fresh] == ("done", 42, None), "the Calculators go on working"
    deleted = [int(n) for calc in (first, second)
               for n in re.findall(r"deleted (\d+) finished tasks", calc.log())]
    assert sum(deleted) == len(old), "each task deleted once, by one of them"


def test_with_retention_zero_nothing_is_deleted(db, calculators):
    old = finished(db, "400 days")
    calc = calculators(result_retention="0")
    wait_done(db, [insert(db, "1")])
    calc.stop()
    assert old in ids_in(db)


def test_an_expired_id_is_410_and_an_id_never_issued_404(client, db):
    expired, kept = finished(db, "8 days"), finished(db, "1 hour")
    db.execute(MAINTAIN, ("7 days", 100))
    response = client.get(f"/api/result/{expired}")
    assert response.status_code == 410
    assert response.json == {"msg": f"expression {expired} expired: results are kept for 7 days"}
    assert client.get(f"/api/result/{kept}").status_code == 200
    assert client.get(f"/api/result/{kept + 1}").status_code == 404
    assert client.get(f"/api/result/{expired}?wait=1").status_code == 410
    assert client.get(f"/api/results?ids={expired},{kept},{kept + 1}").json["results"] == [
        {"expression_id": expired, "status": "expired",
         "msg": f"expression {expired} expired: results are kept for 7 days"},
        {"expression_id": kept, "status": "done", "result": 2},
        {"expression_id": kept + 1, "status": "unknown", "msg": f"no expression with id {kept + 1}"},
    ]


def test_psql_users_read_with_the_same_rule(db, api_url):
    expired, kept = finished(db, "3 hours"), finished(db, "1 minute")
    db.execute(MAINTAIN, ("2 hours", 100))
    with psycopg.connect(api_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, status FROM task_outcomes(%s)", ([kept, expired, kept + 5],)).fetchall()
    assert rows == [(kept, "done"), (expired, "expired"), (kept + 5, "unknown")]


def test_stats_come_from_counters_kept_as_outcomes_are_stored(client, db):
    for age in ("8 days", "8 days", "1 day"):
        finished(db, age)
    finished(db, "8 days", "error")
    assert client.get("/api/stats").json["outcomes"] == {"done": 3, "error": 1, "cancelled": 0}
    db.execute(MAINTAIN, ("7 days", 100))
    assert len(ids_in(db)) == 1
    assert client.get("/api/stats").json["outcomes"] == {"done": 3, "error": 1, "cancelled": 0}, \
        "totals since the start: a Prometheus counter never goes down"
    # Old per-second buckets are folded into one without changing the totals.
    db.execute("UPDATE task_counts SET bucket = bucket - interval '1 hour' WHERE bucket > '-infinity'")
    db.execute(MAINTAIN, ("7 days", 100))
    assert db.execute("SELECT count(*) FROM task_counts WHERE bucket > '-infinity'").fetchone()[0] == 0
    stats = client.get("/api/stats").json
    assert stats["outcomes"] == {"done": 3, "error": 1, "cancelled": 0}
    assert stats["results_per_second_last_minute"] == 0
    # recount_tasks() counts the rows kept.
    db.execute("SELECT recount_tasks()")
    assert client.get("/api/stats").json["outcomes"] == {"done": 1, "error": 0, "cancelled": 0}


def test_a_store_reads_only_its_own_rows_whatever_the_planner_believes(db, database_url):
    """After an ANALYZE that saw history and no pending rows, the planner
    believes in one pending row; storing 10 outcomes must still read about 10
    index entries, not the whole queue (why the drain rate once fell with
    history: bench/growth.py)."""
    from worker.task_queue import claim_tasks, store_results, Outcome
    db.execute("INSERT INTO tasks (expression, status, result, finished_at) "
               "SELECT '1', 'done', '1', now() FROM generate_series(1, 20000)")
    db.execute("ANALYZE tasks")
    db.execute("INSERT INTO tasks (expression) SELECT '1' FROM generate_series(1, 3000)")
    with psycopg.connect(database_url) as conn:  # one transaction: its own statistics
        tasks, _ = claim_tasks(conn, 10, 30, 5)
        read_before = _index_tuples_read(conn)
        for _ in range(6):  # past the switch to a generic plan
            assert store_results(conn, [Outcome(t, "1", None) for t in tasks]) in (set(), {t.id for t in tasks})
        assert _index_tuples_read(conn) - read_before <= 6 * 3 * 10


def _index_tuples_read(conn) -> int:
    return conn.execute("SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index "
                        "WHERE indrelid = 'tasks'::regclass").fetchone()[0]


def test_the_counters_follow_every_way_a_task_finishes(client, db, worker_url):
    """Stored outcomes, a claim that gives up (a second UPDATE in the claim's
    statement), a cancel; a delete by hand does not lower them."""
    from worker.task_queue import claim_tasks, store_results, Outcome
    ids = [insert(db, "1") for _ in range(4)]
    db.execute("UPDATE tasks SET attempts = 5 WHERE id = %s", (ids[0],))
    db.execute("SELECT cancel_tasks(%s)", ([ids[1]],))
    with psycopg.connect(worker_url, autocommit=True) as worker:
        tasks, given_up = claim_tasks(worker, 10, 30, 5)
        assert given_up == [ids[0]]
        store_results(worker, [Outcome(tasks[0], "1", None), Outcome(tasks[1], None, "boom")])
    assert client.get("/api/stats").json["outcomes"] == {"done": 1, "error": 2, "cancelled": 1}
    db.execute("DELETE FROM tasks WHERE id = %s", (ids[1],))
    assert client.get("/api/stats").json["outcomes"] == {"done": 1, "error": 2, "cancelled": 1}
    assert client.get("/api/stats").json["results_per_second_last_minute"] == pytest.approx(3 / 60)
