"""API keys (AUTH=required): who may call, who sees which task, the CLI,
and what the database keeps of a key."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from werkzeug.serving import make_server

from api.keys import create_key, parse_key, revoke_key
from core.settings import ApiSettings
from tests.http_client import request
from tests.support import insert, run_in_threads, wait_for

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serve(app):
    """app behind a real HTTP server on 127.0.0.1; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def keyed_app(make_app):
    """make_app with AUTH=required."""
    return lambda **environ: make_app(AUTH="required", **environ)


@pytest.fixture
def keyed(keyed_app):
    return keyed_app().test_client()


@pytest.fixture
def keys(db):
    """alice and bob (ordinary keys) and root (an admin key)."""
    return {"alice": create_key(db, "alice"), "bob": create_key(db, "bob"),
            "root": create_key(db, "root", admin=True)}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def submit(client, key: str, expression: str = "1+1", **headers) -> int:
    response = client.post("/api/expression", json={"expression": expression}, headers=bearer(key) | headers)
    assert response.status_code == 202, response.json
    return response.json["expression_id"]


# --- who may call ---------------------------------------------------------------

def test_without_a_key_every_api_call_is_401_with_a_challenge(keyed):
    for method, path in [("POST", "/api/expression"), ("GET", "/api/result/1"), ("GET", "/api/results?ids=1"),
                         ("POST", "/api/result/1/cancel"), ("GET", "/api/stats"), ("GET", "/api/nothing-here")]:
        response = keyed.open(path, method=method, json={"expression": "1"} if method == "POST" else None)
        assert response.status_code == 401, path
        assert "Authorization: Bearer <key>" in response.json["msg"]
        challenges = response.headers.getlist("WWW-Authenticate")
        assert any(c.startswith("Bearer realm=") for c in challenges)
        assert any(c.startswith("Basic realm=") for c in challenges)


@pytest.mark.parametrize("header", [
    "Bearer calc_1_" + "A" * 43,                 # the id of a key, another secret
    "Bearer calc_999_" + "A" * 43,               # no such key
    "Bearer not-a-key",
    "Bearer ",
    "Token calc_1_" + "A" * 43,
    "Basic !!!",
])
def test_a_bad_key_is_401(keyed, keys, header):
    response = keyed.get("/api/stats", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["msg"] in ("unknown API key", "malformed Basic credentials: send 'Authorization: Bearer <key>'",
                                    "an API key is needed: send 'Authorization: Bearer <key>' "
                                    "(keys are made with python -m api.keys create NAME)") \
        or response.json["msg"].startswith("send the API key as")
    assert response.headers.getlist("WWW-Authenticate")


def test_a_revoked_key_is_401_at_once_and_its_name_may_be_given_again(keyed, keys, db):
    task_id = submit(keyed, keys["alice"])
    wait_for(lambda: keyed.application.extensions["result_waiter"].listening, message="the listener")
    assert keyed.get(f"/api/result/{task_id}", headers=bearer(keys["alice"])).status_code == 202
    assert 1 in keyed.application.extensions["key_cache"]._rows, "alice's key is cached"
    assert revoke_key(db, "alice") == 0, "revoked, nothing cancelled"
    # The API process's cache of keys is emptied by a notification: at once,
    # give or take its delivery.
    response = wait_for(lambda: (lambda r: r.status_code == 401 and r)(
        keyed.get(f"/api/result/{task_id}", headers=bearer(keys["alice"]))), timeout=2, interval=0.005,
        message="the revoked key refused")
    assert response.json["msg"] == "API key 'alice' was revoked"
    again = create_key(db, "alice")
    response = keyed.get(f"/api/result/{task_id}", headers=bearer(again))
    assert response.status_code == 404, "a new key of the same name is another owner"


def test_basic_auth_carries_the_key_as_password_or_user(keyed, keys):
    for credentials in (f"anyone:{keys['alice']}", f"{keys['alice']}:"):
        header = "Basic " + base64.b64encode(credentials.encode()).decode()
        assert keyed.get("/api/stats", headers={"Authorization": header}).status_code == 200


def test_health_and_the_api_description_stay_open(keyed):
    for path in ("/healthz", "/readyz", "/api/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_the_page_and_metrics_need_an_admin_key(keyed, keys):
    for path in ("/", "/metrics", "/dashboard/overview"):
        assert keyed.get(path).status_code == 401, path
        response = keyed.get(path, headers=bearer(keys["alice"]))
        assert response.status_code == 403, path
        assert response.json["msg"] == f"{path} needs an admin key; key 'alice' is not one"
        assert keyed.get(path, headers=bearer(keys["root"])).status_code == 200, path
    assert keyed.get("/dashboard/static/dashboard.js").status_code == 200, "static files are open"


# --- ownership --------------------------------------------------------------------

def test_another_keys_task_is_exactly_like_one_that_does_not_exist(keyed, keys, db):
    alices = submit(keyed, keys["alice"], "6*7")
    never = alices + 1000
    bob = bearer(keys["bob"])

    def same_as_missing(path_of):
        theirs, missing = keyed.get(path_of(alices), headers=bob), keyed.get(path_of(never), headers=bob)
        assert theirs.status_code == missing.status_code
        assert theirs.json == json.loads(json.dumps(missing.json).replace(str(never), str(alices)))
        return theirs

    assert same_as_missing(lambda i: f"/api/result/{i}").status_code == 404
    assert same_as_missing(lambda i: f"/api/result/{i}?wait=0.2").status_code == 404
    assert same_as_missing(lambda i: f"/api/results?ids={i}").json["results"][0]["status"] == "unknown"
    cancel = keyed.post(f"/api/result/{alices}/cancel", headers=bob)
    assert (cancel.status_code, cancel.json["msg"]) == (404, f"no expression with id {alices}")
    bulk = keyed.post("/api/results/cancel", json={"ids": [alices]}, headers=bob)
    assert bulk.json["results"] == [{"expression_id": alices, "status": "unknown", "cancelled": False,
                                     "msg": f"no expression with id {alices}"}]
    assert db.execute("SELECT status FROM tasks WHERE id = %s", (alices,)).fetchone() == ("pending",)
    # Alice's own requests work.
    alice = bearer(keys["alice"])
    assert keyed.get(f"/api/result/{alices}", headers=alice).status_code == 202
    assert keyed.post(f"/api/result/{alices}/cancel", headers=alice).json["status"] == "cancelled"


def test_an_admin_key_sees_and_cancels_everything(keyed, keys, db):
    alices = submit(keyed, keys["alice"])
    psql_row = insert(db, "2+2")
    root = bearer(keys["root"])
    assert keyed.get(f"/api/result/{alices}", headers=root).status_code == 202
    assert keyed.get(f"/api/result/{psql_row}", headers=root).status_code == 202
    assert keyed.get(f"/api/result/{psql_row}", headers=bearer(keys["alice"])).status_code == 404, \
        "a psql row belongs to nobody: only admins see it"
    results = keyed.get(f"/api/results?ids={alices},{psql_row}", headers=root).json["results"]
    assert [r["status"] for r in results] == ["pending", "pending"]
    bulk = keyed.post("/api/results/cancel", json={"ids": [alices, psql_row]}, headers=root).json
    assert [r["cancelled"] for r in bulk["results"]] == [True, True]


def test_the_owner_and_fair_round_are_set_by_the_api(keyed, keys, db):
    first = keyed.post("/api/expressions", json={"items": [{"expression": "1"}] * 3},
                       headers=bearer(keys["alice"])).json["expression_ids"]
    bobs = submit(keyed, keys["bob"])
    rows = {row[0]: row[1:] for row in db.execute("SELECT id, owner, fair_round FROM tasks")}
    alice_id, bob_id = parse_key(keys["alice"])[0], parse_key(keys["bob"])[0]
    head = rows[first[0]][1]
    assert [rows[i] for i in first] == [(alice_id, head), (alice_id, head + 1), (alice_id, head + 2)]
    assert rows[bobs] == (bob_id, head), "a key with nothing pending starts at the head of the queue"


def test_stats_of_a_key_are_its_own(keyed, keys, db):
    for _ in range(3):
        submit(keyed, keys["alice"])
    submit(keyed, keys["bob"])
    insert(db, "1")
    assert keyed.get("/api/stats", headers=bearer(keys["bob"])).json["queue"]["pending"] == 1
    assert keyed.get("/api/stats", headers=bearer(keys["alice"])).json["queue"]["pending"] == 3
    assert keyed.get("/api/stats", headers=bearer(keys["root"])).json["queue"]["pending"] == 5
    alices = db.execute("SELECT array_agg(id) FROM tasks WHERE owner = 1").fetchone()[0]
    db.execute("SELECT cancel_tasks(%s)", (alices[:2],))
    stats = keyed.get("/api/stats", headers=bearer(keys["alice"])).json
    assert (stats["queue"]["pending"], stats["outcomes"]["cancelled"]) == (1, 2)
    assert keyed.get("/api/stats", headers=bearer(keys["bob"])).json["outcomes"]["cancelled"] == 0


def test_idempotency_keys_are_per_api_key(keyed, keys):
    one = submit(keyed, keys["alice"], "7", **{"Idempotency-Key": "order-1"})
    two = submit(keyed, keys["bob"], "7", **{"Idempotency-Key": "order-1"})
    assert one != two, "bob's request is not a replay of alice's"
    assert submit(keyed, keys["alice"], "7", **{"Idempotency-Key": "order-1"}) == one


# --- limits -----------------------------------------------------------------------

def test_past_the_pending_limit_a_submission_is_429_and_inserts_nothing(keyed_app, keys, db):
    client = keyed_app(MAX_PENDING_PER_KEY=3).test_client()
    alice = bearer(keys["alice"])
    submit(client, keys["alice"])
    submit(client, keys["alice"])
    bulk = client.post("/api/expressions", json={"items": [{"expression": "1"}] * 2}, headers=alice)
    assert bulk.status_code == 429, "all or nothing"
    assert bulk.headers["Retry-After"] == "1"
    assert bulk.json["msg"] == ("too many unfinished tasks: key 'alice' has 2 unfinished tasks, at most 3 may "
                                "wait at once, and this request adds 2. Nothing was submitted; wait for results "
                                "or cancel some")
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (2,)
    submit(client, keys["alice"])
    full = client.post("/api/expression", json={"expression": "1"}, headers=alice)
    assert full.status_code == 429
    assert "key 'alice' has 3 unfinished tasks or more, at most 3 may wait" in full.json["msg"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (3,)
    submit(client, keys["bob"])  # another key has its own limit
    # A finished task no longer counts, wherever it stood in the key's queue
    # (here the middle one: the span of its rounds still says 3, the count 2).
    middle = db.execute("SELECT id FROM tasks WHERE owner = 1 ORDER BY id OFFSET 1 LIMIT 1").fetchone()[0]
    db.execute("SELECT cancel_tasks(ARRAY[%s]::bigint[])", (middle,))
    submit(client, keys["alice"])
    assert client.post("/api/expression", json={"expression": "1"}, headers=alice).status_code == 429


def test_a_replayed_submission_is_answered_even_at_the_limit(keyed_app, keys):
    client = keyed_app(MAX_PENDING_PER_KEY=1).test_client()
    first = submit(client, keys["alice"], "5", **{"Idempotency-Key": "k"})
    assert submit(client, keys["alice"], "5", **{"Idempotency-Key": "k"}) == first
    refused = client.post("/api/expression", json={"expression": "5"},
                          headers=bearer(keys["alice"]) | {"Idempotency-Key": "other"})
    assert refused.status_code == 429


def test_the_item_rate_limit_counts_bulk_items(keyed_app, keys, db):
    client = keyed_app(RATE_LIMIT_ITEMS=0.01, RATE_LIMIT_BURST=1000, MAX_BATCH=10,
                       RATE_LIMIT_REQUESTS=0).test_client()
    alice = bearer(keys["alice"])
    assert client.post("/api/expressions", json={"items": [{"expression": "1"}] * 10},
                       headers=alice).status_code == 202
    refused = client.post("/api/expressions", json={"items": [{"expression": "1"}] * 10}, headers=alice)
    assert refused.status_code == 429
    assert refused.json["msg"].startswith("rate limit: key 'alice' may submit 0.01 items per second")
    assert int(refused.headers["Retry-After"]) > 60
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (10,)
    assert client.post("/api/expression", json={"expression": "1"}, headers=bearer(keys["bob"])).status_code == 202


def test_the_rate_limit_holds_across_two_api_processes(api_url, db, keys, tmp_path):
    from tests.support import ApiServer
    # A bucket of 5 requests that refills one every 1,000 s: none comes back
    # while the test runs, however slow the machine (no wall-clock margin).
    settings = dict(auth="required", rate_limit_requests=0.001, rate_limit_burst=5000, rate_limit_items=0)
    servers = [ApiServer(api_url, tmp_path / f"api{i}.log", **settings) for i in range(2)]
    try:
        answers = []
        for i in range(12):
            status, headers, _ = request(servers[i % 2].base, "POST", "/api/expression", '{"expression": "1"}',
                                         {"Content-Type": "application/json"} | bearer(keys["alice"]))
            answers.append((status, headers.get("Retry-After"), _))
    finally:
        for server in servers:
            server.stop()
    accepted = [a for a in answers if a[0] == 202]
    assert len(accepted) == 5, answers
    assert [status for status, _, _ in answers[:5]] == [202] * 5
    assert [status for status, _, _ in answers[5:]] == [429] * 7, answers
    assert all(int(retry) >= 1 for _, retry, _ in answers[5:]), answers
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == len(accepted)


def test_limits_are_off_without_keys_unless_set(app, client, db):
    assert not app.config["SETTINGS"].key_limits.any
    response = client.post("/api/expression", json={"expression": "1"})
    assert response.status_code == 202
    assert db.execute("SELECT owner, fair_round = queue_head() FROM tasks").fetchone() == (None, True), \
        "AUTH=off: nobody's task (the tenant of rows without an owner), at the queue's head"


def test_a_limit_set_without_keys_applies_to_all_clients_together(api_url, db):
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True,
                      "SETTINGS": ApiSettings.from_env({"MAX_PENDING_PER_KEY": "1"})})
    try:
        client = app.test_client()
        assert client.post("/api/expression", json={"expression": "1"}).status_code == 202
        refused = client.post("/api/expression", json={"expression": "1"})
        assert refused.status_code == 429
        assert "this service (all clients together) has 1" in refused.json["msg"]
    finally:
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()


# --- what the database keeps, and who may change it ---------------------------------

def test_keys_are_stored_only_as_hashes(db, keys):
    stored = json.dumps(db.execute("SELECT json_agg(k) FROM api_keys k").fetchone()[0])
    for key in keys.values():
        key_id, secret = parse_key(key)
        assert secret not in stored and key not in stored
        digest = db.execute("SELECT secret_sha256 FROM api_keys WHERE id = %s", (key_id,)).fetchone()[0]
        assert bytes(digest) == hashlib.sha256(secret.encode()).digest()


@pytest.mark.parametrize("statement", [
    "INSERT INTO api_keys (name, secret_sha256) VALUES ('mallory', sha256('x'))",
    "UPDATE api_keys SET is_admin = true",
    "UPDATE api_keys SET revoked_at = NULL",
    "DELETE FROM api_keys",
    "SELECT * FROM submission_buckets",
    "UPDATE submission_buckets SET request_tokens = 1000",
    "UPDATE tasks SET owner = 1",
])
def test_the_api_role_cannot_make_keys_or_change_owners(api_url, db, keys, statement):
    insert(db, "1")
    with psycopg.connect(api_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_a_finished_tasks_owner_is_final(db):
    task_id = insert(db, "1")
    db.execute("SELECT cancel_tasks(ARRAY[%s]::bigint[])", (task_id,))
    with pytest.raises(psycopg.errors.RestrictViolation):
        db.execute("UPDATE tasks SET owner = 7 WHERE id = %s", (task_id,))


# --- the command ----------------------------------------------------------------------

def run_keys(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "api.keys", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_keys_command_creates_lists_and_revokes(database_url, db, keyed):
    created = run_keys(database_url, "create", "carol", "--admin")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert parse_key(key) is not None
    assert "shown this once" in created.stderr
    assert keyed.get("/metrics", headers=bearer(key)).status_code == 200
    submit(keyed, key)
    listed = run_keys(database_url, "list")
    assert listed.returncode == 0
    assert "carol" in listed.stdout and key not in listed.stdout
    assert listed.stdout.splitlines()[1].split()[-1] == "1", "carol's pending tasks"
    duplicate = run_keys(database_url, "create", "carol")
    assert (duplicate.returncode, duplicate.stderr.strip()) == (
        1, "error: a live key named 'carol' exists; revoke it first or pick another name")
    bad = run_keys(database_url, "create", "no spaces please")
    assert bad.returncode == 1 and "letters, digits" in bad.stderr
    assert run_keys(database_url, "revoke", "carol").returncode == 0
    assert keyed.get("/metrics", headers=bearer(key)).status_code == 401
    missing = run_keys(database_url, "revoke", "carol")
    assert (missing.returncode, missing.stderr.strip()) == (
        1, "error: no live key named 'carol' (names are compared without case)")


def test_the_api_role_cannot_run_the_keys_command(api_url, db):
    refused = run_keys(api_url, "create", "eve")
    assert refused.returncode == 1
    assert "may not manage keys" in refused.stderr


@pytest.mark.parametrize("rates", [
    {"RATE_LIMIT_REQUESTS": 0, "RATE_LIMIT_ITEMS": 0},          # the key's turn: an advisory lock
    {"RATE_LIMIT_REQUESTS": 1000, "RATE_LIMIT_ITEMS": 1000},    # the key's turn: its bucket's row lock
])
def test_the_pending_limit_is_exact_under_concurrent_submissions(keyed_app, keys, db, rates):
    app = keyed_app(MAX_PENDING_PER_KEY=5, **rates)
    statuses = []
    with serve(app) as base:
        def one():
            statuses.append(request(base, "POST", "/api/expressions",
                                    json.dumps({"items": [{"expression": "1"}] * 2}),
                                    {"Content-Type": "application/json"} | bearer(keys["alice"]))[0])
        run_in_threads(one, 12)
    assert sorted(statuses) == [202] * 2 + [429] * 10, statuses
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (4,)


def test_the_rate_limit_is_exact_under_concurrent_submissions(keyed_app, keys, db):
    """12 requests at once against a bucket of 5: five pass (a bucket read
    without its row lock would let concurrent requests spend the same tokens)."""
    app = keyed_app(RATE_LIMIT_REQUESTS=0.01, RATE_LIMIT_BURST=500, RATE_LIMIT_ITEMS=0, MAX_PENDING_PER_KEY=0)
    statuses = []
    with serve(app) as base:
        def one():
            statuses.append(request(base, "POST", "/api/expression", '{"expression": "1"}',
                                    {"Content-Type": "application/json"} | bearer(keys["alice"]))[0])
        run_in_threads(one, 12)
    assert sorted(statuses) == [202] * 5 + [429] * 7, statuses
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (5,)


def test_the_command_line_client_sends_the_key(keyed_app, keys, calculators):
    calculators()
    env = {k: v for k, v in os.environ.items() if k != "CALCULATOR_API_KEY"}
    with serve(keyed_app()) as base:
        def client(*args, **extra):
            return subprocess.run([sys.executable, "-m", "calculator_client", "--url", base, *args], cwd=ROOT,
                                  env=env | {"PYTHONPATH": str(ROOT / "client")} | extra, capture_output=True, text=True, timeout=60)
        refused = client("6*7")
        assert (refused.returncode, refused.stderr) == (
            2, "error: an API key is needed: send 'Authorization: Bearer <key>' "
               "(keys are made with python -m api.keys create NAME)\n")
        assert client("6*7", "--key", keys["alice"]).stdout == "42\n"
        assert client("6*7", CALCULATOR_API_KEY=keys["bob"]).stdout == "42\n"


def test_a_revocation_reaches_every_api_process_at_once(api_url, database_url, db, keys, tmp_path):
    """Two gunicorn processes that have both used alice's key refuse it
    within moments of `python -m api.keys revoke alice` (their caches of
    keys are emptied by a notification)."""
    from tests.support import ApiServer
    servers = [ApiServer(api_url, tmp_path / f"api{i}.log", auth="required", web_concurrency=1)
               for i in range(2)]
    try:
        def status(server) -> int:
            return request(server.base, "GET", "/api/stats", headers=bearer(keys["alice"]))[0]
        for _ in range(20):  # used, and so cached, by each (its listener connects meanwhile)
            assert [status(server) for server in servers] == [200, 200]
            time.sleep(0.02)
        assert run_keys(database_url, "revoke", "alice").returncode == 0
        for server in servers:
            wait_for(lambda: status(server) == 401, timeout=2, interval=0.005, message="revoked everywhere")
    finally:
        for server in servers:
            server.stop()


def test_a_bulk_larger_than_the_pending_limit_is_400_not_a_429_to_retry(keyed_app, keys, db):
    client = keyed_app(MAX_PENDING_PER_KEY=3).test_client()
    response = client.post("/api/expressions", json={"items": [{"expression": "1"}] * 4},
                           headers=bearer(keys["alice"]))
    assert response.status_code == 400
    assert response.json["msg"] == ("4 expressions can never be accepted at once: a key may have at most 3 "
                                    "unfinished tasks (MAX_PENDING_PER_KEY); send at most 3 at a time")
    assert "Retry-After" not in response.headers


def test_the_rate_limit_holds_under_heavy_concurrency(keyed_app, keys, db):
    """60 clients hammering for two seconds: no more pass than the bucket and its
    refill allow (a submission that waited for the bucket's lock must not
    refill the time it waited a second time)."""
    app = keyed_app(RATE_LIMIT_REQUESTS=50, RATE_LIMIT_BURST=0.2, RATE_LIMIT_ITEMS=0, MAX_PENDING_PER_KEY=0,
                    POOL_MAX_SIZE=40)
    statuses = []
    with serve(app) as base:
        started = time.monotonic()

        def hammer():
            while time.monotonic() - started < 2.0:
                statuses.append(request(base, "POST", "/api/expression", '{"expression": "1"}',
                                        {"Content-Type": "application/json"} | bearer(keys["alice"]))[0])
        run_in_threads(hammer, 60)
        elapsed = time.monotonic() - started
    accepted = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert accepted == statuses.count(202)
    assert set(statuses) == {202, 429}
    assert accepted <= 10 + 50 * elapsed + 1, (accepted, elapsed, len(statuses))


@pytest.mark.parametrize("environ, message", [
    ({"MAX_PENDING_PER_KEY": "99999999999"}, "MAX_PENDING_PER_KEY must be at most 1e+09"),
    ({"RATE_LIMIT_REQUESTS": "1e308"}, "RATE_LIMIT_REQUESTS must be at most 1e+09"),
    ({"RATE_LIMIT_ITEMS": "1e308"}, "RATE_LIMIT_ITEMS must be at most 1e+09"),
    ({"RATE_LIMIT_BURST": "1e308"}, "RATE_LIMIT_BURST must be at most 1e+06"),
    ({"AUTH": ""}, "AUTH is set but empty"),
    ({"AUTH": "yes"}, "AUTH must be one of off, required"),
    ({"AUTH": "required", "RATE_LIMIT_ITEMS": "10"}, "RATE_LIMIT_ITEMS x RATE_LIMIT_BURST must be at least MAX_BATCH"),
])
def test_settings_that_make_no_sense_are_refused_at_start(environ, message):
    from core.settings import SettingsError
    with pytest.raises(SettingsError, match=re.escape(message)):
        ApiSettings.from_env(environ)


def test_a_psql_owner_must_be_a_key(db, keys):
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="owner 99 is not an API key"):
        db.execute("INSERT INTO tasks (expression, owner) VALUES ('1', 99)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="owner 0 is not an API key"):
        db.execute("INSERT INTO tasks (expression, owner) VALUES ('1', 0)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="owner 0 is not an API key"):
        db.execute("INSERT INTO tasks (expression, owner, fair_round) VALUES ('1', 0, 1)")  # a round of its own too
    task_id = insert(db, "1")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute("UPDATE tasks SET owner = 99 WHERE id = %s", (task_id,))
    db.execute("UPDATE tasks SET owner = 2 WHERE id = %s", (task_id,))  # bob exists: bob's task now
    with pytest.raises(psycopg.errors.RestrictViolation, match="cannot be deleted"):
        db.execute("DELETE FROM api_keys WHERE name = 'bob'")


def test_key_names_are_unique_whatever_their_case(db, keys):
    with pytest.raises(psycopg.errors.UniqueViolation):
        create_key(db, "ALICE")


def test_another_keys_expired_id_is_expired_in_a_bulk_cancel_too(keyed, keys, db):
    """Below the retention mark an id not in tasks answers 'expired': another
    key's task there must answer the same, or it would tell that it exists."""
    bobs = submit(keyed, keys["bob"])
    gone = submit(keyed, keys["alice"])
    db.execute("UPDATE task_retention SET purged_through = %s", (gone + 1,))
    db.execute("DELETE FROM tasks WHERE id = %s", (gone,))
    alice = bearer(keys["alice"])
    results = keyed.post("/api/results/cancel", json={"ids": [bobs, gone]}, headers=alice).json["results"]
    assert [r["status"] for r in results] == ["expired", "expired"]
    assert results[0]["msg"] == results[1]["msg"].replace(str(gone), str(bobs))
    assert keyed.get(f"/api/result/{bobs}", headers=alice).status_code == 410


def test_revoking_may_cancel_the_keys_unfinished_tasks(database_url, db, keys, keyed):
    mine = [submit(keyed, keys["alice"]) for _ in range(2)]
    others = submit(keyed, keys["bob"])
    revoked = run_keys(database_url, "revoke", "alice", "--cancel-pending")
    assert revoked.returncode == 0
    assert revoked.stderr.strip() == "revoked key 'alice'; cancelled 2 unfinished tasks"
    statuses = dict(db.execute("SELECT id, status FROM tasks").fetchall())
    assert [statuses[i] for i in mine] == ["cancelled", "cancelled"] and statuses[others] == "pending"


def test_the_client_strips_a_keys_line_end_and_refuses_a_mangled_key(keyed_app, keys, calculators):
    calculators()
    with serve(keyed_app()) as base:
        def client(key):
            return subprocess.run([sys.executable, "-m", "calculator_client", "--url", base, "--key", key, "6*7"],
                                  cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "client")}, capture_output=True, text=True, timeout=60)
        assert client(keys["alice"] + "\r\n").stdout == "42\n"
        mangled = client(keys["alice"][:-3] + "€ x")
        assert mangled.returncode == 2
        assert "the API key holds characters no key has" in mangled.stderr
        assert keys["alice"][:-3] not in mangled.stderr, "the key is not printed"


def test_the_page_names_each_tasks_key_for_admins(keyed, keys, db):
    alices = submit(keyed, keys["alice"], "6*7")
    insert(db, "1+1")
    root = bearer(keys["root"])
    listing = keyed.get("/dashboard/tasks", headers=root).get_data(as_text=True)
    assert "· alice" in listing and listing.count("· ") == 1
    detail = keyed.get(f"/dashboard/task/{alices}", headers=root).get_data(as_text=True)
    assert "<dt>API key</dt><dd>alice</dd>" in detail


def test_admission_is_a_few_index_probes_whatever_the_planner_believes(database_url, db, keys):
    """Plans kept by a session from when the table was small (statistics of
    a few rows) must not read every pending task of a key: next_fair_round()
    and admit_submission() read a handful of index entries at 3,000 pending."""
    from tests.test_retention import _index_tuples_read
    with psycopg.connect(database_url) as conn:  # one transaction: its own statistics
        for _ in range(8):  # plans made, and kept, while the key has nothing pending
            conn.execute("SELECT next_fair_round(1)")
            conn.execute("SELECT * FROM admit_submission(1, 1, 10000, 0, 0, 0, 0)")
        conn.execute("INSERT INTO tasks (expression, owner, fair_round) SELECT '1', 1, g "
                     "FROM generate_series(1, 3000) g")
        before = _index_tuples_read(conn)
        assert conn.execute("SELECT next_fair_round(1)").fetchone() == (3001,)
        assert conn.execute("SELECT * FROM admit_submission(1, 1, 10000, 0, 0, 0, 0)").fetchone() == (3001, None, None)
        assert _index_tuples_read(conn) - before <= 20


def test_a_submission_that_waited_for_the_bucket_never_moves_its_clock_back(database_url, db, keys):
    """The rate-limit race, step by step: one session holds alice's bucket
    and refills it; another calls admit_submission() meanwhile and waits for
    the lock. Once let through, the bucket's clock must not go back to when
    the waiter started (it would then refill that time twice: outside tests
    passed 1.4-1.7x the rate)."""
    admit = "SELECT * FROM admit_submission(1, 1, 0, 1000, 2000, 0, 0)"
    db.execute(admit)  # the bucket exists
    waiter_pid = []
    with psycopg.connect(database_url) as holder:  # one transaction
        holder.execute("SELECT * FROM submission_buckets WHERE owner = 1 FOR UPDATE")

        def wait_for_the_bucket():
            with psycopg.connect(database_url, autocommit=True) as waiter:
                waiter_pid.append(waiter.info.backend_pid)
                waiter.execute(admit)

        thread = threading.Thread(target=wait_for_the_bucket)
        thread.start()
        wait_for(lambda: waiter_pid and db.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
            (waiter_pid[0],)).fetchone() == (True,), message="the second session to wait for the bucket")
        refilled = holder.execute("UPDATE submission_buckets SET refilled_at = clock_timestamp() "
                                  "WHERE owner = 1 RETURNING refilled_at").fetchone()[0]
        holder.commit()
        thread.join(10)
    assert db.execute("SELECT refilled_at FROM submission_buckets WHERE owner = 1").fetchone()[0] >= refilled


def test_the_pending_limit_s_turn_is_taken_step_by_step(database_url, db, keys):
    """The pending-limit race without a bucket, step by step: one session has
    admitted alice's last 2 places and inserted them, not yet committed;
    another submits 2 more meanwhile. It must wait for the first (the key's
    advisory lock: it is seen waiting in pg_stat_activity) and then be
    refused; without the lock it would count the pending rows without the
    first one's, and both would pass."""
    from core.database import load_query
    params = {"owner": 1, "items": 2, "max_pending": 2, "request_rate": 0, "request_burst": 0,
              "item_rate": 0, "item_burst": 0, "expressions": ["1", "2"], "variables": ["{}", "{}"],
              "trace_context": None}
    answers, waiter_pid = [], []
    with psycopg.connect(database_url) as first:  # one transaction, held open
        assert len([row for row in first.execute(load_query("insert_tasks_admitted"), params)
                    if row[0] is not None]) == 2

        def second_submission():
            with psycopg.connect(database_url, autocommit=True) as second:
                waiter_pid.append(second.info.backend_pid)
                answers.extend(second.execute(load_query("insert_tasks_admitted"), params).fetchall())

        thread = threading.Thread(target=second_submission)
        thread.start()
        waited = wait_for(lambda: answers or (waiter_pid and db.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
            (waiter_pid[0],)).fetchone() == (True,)), message="the second submission to wait or finish")
        assert waited is True and not answers, f"the second submission did not wait for the first: {answers}"
        first.commit()
        thread.join(10)
    assert answers == [(None, "pending", 2.0)]
    assert db.execute("SELECT count(*) FROM tasks WHERE owner = 1").fetchone() == (2,)
