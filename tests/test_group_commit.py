"""Group commit (api/group_commit.py): concurrent submissions of one API
process written by one transaction, each client seeing what it saw alone.

A group is formed for real: a test connection holds a SHARE lock on tasks,
so the first submission's INSERT waits; the next ones queue behind it; when
the lock goes, the first is written alone and the queue as one group."""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from api.keys import create_key
from tests.http_client import request
from tests.support import wait_for
from tests.test_auth import serve


@contextlib.contextmanager
def writes_held(database_url):
    """INSERTs into tasks wait until the block ends (reads do not)."""
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE tasks IN SHARE MODE")
        yield
        blocker.commit()


def post(base, path, payload, headers=None):
    return request(base, "POST", path, json.dumps(payload), {"Content-Type": "application/json"} | (headers or {}))


def in_one_group(app, database_url, base, calls):
    """Send calls = [(path, payload, headers)] so that the first is written
    alone and all the others queue into one group; returns (answers in the
    calls' order, the queued members' items in their queue order)."""
    group = app.extensions["group_commit"]
    batches, members = group.batches, group.members
    with ThreadPoolExecutor(len(calls)) as pool, writes_held(database_url):
        first = pool.submit(post, base, *calls[0])
        wait_for(lambda: group._busy, message="the first submission to be in flight")
        rest = [pool.submit(post, base, *call) for call in calls[1:]]
        wait_for(lambda: len(group._queue) == _members_expected(calls[1:]), timeout=20,
                 message="the others to queue")
        queued = [list(member.items) for member in group._queue]
    answers = [first.result()] + [f.result() for f in rest]
    assert group.batches - batches == 2, "the first alone, then all the others in one group"
    assert group.members - members == 1 + len(queued)
    return answers, queued


def _members_expected(calls) -> int:
    """Calls that reach the group: every valid submission without an Idempotency-Key."""
    count = 0
    for path, payload, headers in calls:
        if headers and "Idempotency-Key" in headers:
            continue
        items = payload.get("items", [payload])
        if all(isinstance(i, dict) and "(" not in i.get("expression", "(") for i in items):
            count += 1
    return count


def expressions_of(db, ids):
    rows = dict(db.execute("SELECT id, expression FROM tasks WHERE id = ANY(%s)", (ids,)).fetchall())
    return [rows.get(i) for i in ids]


def test_each_member_of_a_group_gets_its_own_ids_and_its_own_errors(make_app, database_url, db):
    app = make_app()
    with serve(app) as base:
        calls = [("/api/expression", {"expression": "1+0"}, None)]
        calls += [("/api/expression", {"expression": f"1+{k}"}, None) for k in range(1, 8)]
        calls += [("/api/expressions", {"items": [{"expression": f"2+{k}"}, {"expression": f"3+{k}"},
                                                  {"expression": f"4+{k}"}]}, None) for k in range(3)]
        calls += [("/api/expression", {"expression": "(1+"}, None),                    # 400, never queued
                  ("/api/expressions", {"items": [{"expression": "5"}, {"expression": "(x"}]}, None)]
        answers, queued = in_one_group(app, database_url, base, calls)
    assert len(queued) == 10
    for (path, payload, _), (status, headers, body) in zip(calls, answers):
        items = [payload] if path == "/api/expression" else payload["items"]
        if any("(" in item["expression"] for item in items):
            assert status == 400, body
            if path == "/api/expressions":
                assert body["errors"] == [{"index": 1, "msg": body["errors"][0]["msg"]}]
            continue
        assert status == 202, body
        ids = [body["expression_id"]] if path == "/api/expression" else body["expression_ids"]
        assert ids == sorted(ids), "a bulk's ids in its items' order"
        assert expressions_of(db, ids) == [item["expression"] for item in items]
        if path == "/api/expression":
            assert headers["Location"] == f"/api/result/{ids[0]}"
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (8 + 9,), "nothing of the refused bulk"


def test_limits_in_a_group_are_what_they_would_be_one_by_one(make_app, database_url, db):
    """Two keys, singles and bulks interleaved in one group, a pending limit
    of 5 per key: the oracle admits the queued submissions one by one in
    queue order (the group orders by key, keeping each key's order)."""
    keys = {"alice": create_key(db, "alice"), "bob": create_key(db, "bob")}
    app = make_app(AUTH="required", MAX_PENDING_PER_KEY=5)
    bearer = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    calls = [("/api/expression", {"expression": "1"}, bearer["alice"])]
    for k in range(6):
        for name in ("alice", "bob"):
            tag = k * 10 + (1 if name == "alice" else 2)
            if k % 2:
                calls.append(("/api/expressions", {"items": [{"expression": f"{tag}+{j}"} for j in range(3)]},
                              bearer[name]))
            else:
                calls.append(("/api/expression", {"expression": f"{tag}"}, bearer[name]))
    with serve(app) as base:
        answers, queued = in_one_group(app, database_url, base, calls)
    owner = {}
    for path, payload, headers in calls:
        items = [payload] if path == "/api/expression" else payload["items"]
        owner[items[0]["expression"]] = "alice" if headers is bearer["alice"] else "bob"
    pending = {"alice": 1, "bob": 0}
    expected = {}
    for items in queued:
        first = items[0][0]
        who = owner[first]
        admitted = pending[who] + len(items) <= 5
        pending[who] += len(items) if admitted else 0
        expected[first] = admitted
    assert set(expected.values()) == {True, False}, "the limit is reached within the group"
    for (path, payload, _), (status, headers, body) in zip(calls[1:], answers[1:]):
        items = [payload] if path == "/api/expression" else payload["items"]
        if expected[items[0]["expression"]]:
            assert status == 202, body
            ids = [body["expression_id"]] if path == "/api/expression" else body["expression_ids"]
            assert expressions_of(db, ids) == [item["expression"] for item in items]
        else:
            assert status == 429, body
            assert headers["Retry-After"] == "1"
            assert body["msg"].startswith("too many unfinished tasks: key ")
            assert "Nothing was submitted" in body["msg"]
    counts = dict(db.execute("SELECT k.name, count(*) FROM tasks t JOIN api_keys k ON k.id = t.owner "
                             "GROUP BY k.name").fetchall())
    assert counts == pending
    # Fair rounds stay distinct and consecutive per key, as one by one.
    for name in keys:
        rounds = [r for (r,) in db.execute(
            "SELECT fair_round FROM tasks t JOIN api_keys k ON k.id = t.owner WHERE k.name = %s "
            "ORDER BY t.id", (name,))]
        assert rounds == list(range(rounds[0], rounds[0] + len(rounds)))


def test_idempotency_keys_beside_a_group_are_as_before(make_app, database_url, db):
    app = make_app()
    same = {"Idempotency-Key": "k-1"}
    calls = [("/api/expression", {"expression": "1"}, None),
             ("/api/expression", {"expression": "7"}, same),
             ("/api/expression", {"expression": "7"}, same),
             ("/api/expression", {"expression": "8"}, {"Idempotency-Key": "k-1"}),
             ] + [("/api/expression", {"expression": f"2+{k}"}, None) for k in range(4)]
    with serve(app) as base:
        answers, queued = in_one_group(app, database_url, base, calls)
    assert len(queued) == 4
    keyed = answers[1:4]
    created = [a for a in keyed if a[0] == 202 and "Idempotent-Replayed" not in a[1]]
    replayed = [a for a in keyed if a[0] == 202 and a[1].get("Idempotent-Replayed") == "true"]
    refused = [a for a in keyed if a[0] == 422]
    # "7" and "8" under one key: whichever came first is created, the same
    # request again is replayed, the other request is 422.
    assert len(created) == 1 and len(created) + len(replayed) + len(refused) == 3
    assert all(a[2]["expression_id"] == created[0][2]["expression_id"] for a in replayed)
    singles = [a[2]["expression_id"] for a in answers[4:]]
    assert expressions_of(db, singles) == [f"2+{k}" for k in range(4)]


def test_a_member_whose_statement_fails_takes_nobody_else_down(make_app, database_url, db):
    """A statement error in the group's transaction (here a trigger refusing
    one expression) rolls it back; each member is then written alone: the
    failing one gets its error, the others their ids."""
    db.execute("""CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN IF NEW.expression = '666' THEN RAISE EXCEPTION 'poison'; END IF; RETURN NEW; END $$""")
    db.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION refuse_poison()")
    try:
        app = make_app()
        calls = [("/api/expression", {"expression": "1"}, None),
                 ("/api/expression", {"expression": "2"}, None),
                 ("/api/expression", {"expression": "666"}, None),
                 ("/api/expressions", {"items": [{"expression": "3"}, {"expression": "4"}]}, None)]
        with serve(app) as base:
            answers, queued = in_one_group(app, database_url, base, calls)
    finally:
        db.execute("DROP TRIGGER refuse_poison ON tasks")
        db.execute("DROP FUNCTION refuse_poison()")
    assert [a[0] for a in answers] == [202, 202, 500, 202]
    # The group's transaction was rolled back whole: nothing written twice.
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (4,)
    assert expressions_of(db, [answers[1][2]["expression_id"]]) == ["2"]
    assert expressions_of(db, answers[3][2]["expression_ids"]) == ["3", "4"]


def test_a_lone_submission_is_written_at_once_alone(make_app, db):
    """No batching window: one client's submissions, one after another, are
    each a transaction of their own, and take about as long as a request
    that reads (a window would add its length to every one)."""
    import statistics
    import time
    app = make_app()
    client = app.test_client()
    group = app.extensions["group_commit"]
    first = client.post("/api/expression", json={"expression": "1"}).json["expression_id"]
    batches = group.batches
    posts, gets = [], []
    for k in range(40):
        started = time.perf_counter()
        assert client.post("/api/expression", json={"expression": f"{k}"}).status_code == 202
        posts.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert client.get(f"/api/result/{first}").status_code == 202
        gets.append(time.perf_counter() - started)
    assert group.batches - batches == 40 and not group._busy
    # A POST is a GET's work plus a write and a commit (fsync is off in the
    # tests' cluster): measured 2x; a 5 ms window made it 5x.
    assert statistics.median(posts) < 3 * statistics.median(gets), (statistics.median(posts),
                                                                     statistics.median(gets))
