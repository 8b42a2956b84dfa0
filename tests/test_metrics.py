"""GET /metrics: the figures move as tasks are submitted, finish and time
out; HTTP durations add up across gunicorn's worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from prometheus_client.parser import text_string_to_metric_families

from tests.http_client import answers, request
from tests.support import ROOT, insert, wait_done, wait_for, write_tenant_usage
from tools.pgcluster import free_port

RUNAWAY = "9**(9**9)"
SLOW = "fac(300000) / fac(299999)"  # a second or two of honest work


def parse(text: str) -> dict:
    """{(sample name, (sorted label pairs)): value}"""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def calculator_value(samples: dict, name: str, **labels) -> float:
    """The sum over every live Calculator."""
    return sum(v for (n, pairs), v in samples.items()
               if n == name and all((k, labels[k]) in pairs for k in labels))


def test_http_durations_by_route_and_status(client, db):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/api/stats").status_code == 200
    assert client.get("/api/result/abc").status_code == 400
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)
    count = "calculator_http_request_duration_seconds_count"
    moved = [value(after, count, **labels) - value(before, count, **labels) for labels in (
        {"method": "GET", "route": "/api/stats", "status": "200"},
        {"method": "GET", "route": "/api/result/<expression_id>", "status": "400"},
        {"method": "GET", "route": "(unmatched)", "status": "404"})]
    assert moved == [3, 1, 1]


def test_queue_and_calculator_figures_move_as_tasks_finish_and_time_out(client, db, calculators):
    db.execute("DELETE FROM calculators")  # those killed by earlier tests
    samples = scrape(client)
    assert value(samples, "calculator_database_up") == 1
    assert value(samples, "calculator_queue_pending_tasks") == 0
    assert value(samples, "calculator_live_calculators") == 0

    ids = [insert(db, "2+2"), insert(db, "x*t**y", '{"x": 10, "y": 1, "t": 11}'), insert(db, "1/0")]
    samples = scrape(client)
    assert value(samples, "calculator_queue_pending_tasks") == 3
    assert value(samples, "calculator_queue_queued_tasks") == 3
    assert value(samples, "calculator_queue_oldest_pending_age_seconds") > 0

    calc = calculators(calculation_timeout=1, num_processes=1)
    wait_done(db, ids)
    samples = scrape(client)
    assert value(samples, "calculator_queue_pending_tasks") == 0
    assert value(samples, "calculator_queue_finished_tasks_total", status="done") == 2
    assert value(samples, "calculator_queue_finished_tasks_total", status="error") == 1
    assert value(samples, "calculator_live_calculators") == 1
    # The Calculator's own figures arrive with its next heartbeat.
    samples = wait_for(lambda: (s := scrape(client)) and
                       calculator_value(s, "calculator_results_stored_total") == 3 and s,
                       timeout=20, interval=0.5, message="the Calculator's figures")
    assert calculator_value(samples, "calculator_evaluation_duration_seconds_count") == 3
    assert calculator_value(samples, "calculator_evaluation_duration_seconds_bucket", le="+Inf") == 3
    assert calculator_value(samples, "calculator_claim_size_tasks_count") >= 1
    assert calculator_value(samples, "calculator_claim_size_tasks_sum") == 3
    assert calculator_value(samples, "calculator_claim_duration_seconds_count") >= 1
    assert calculator_value(samples, "calculator_evaluation_timeouts_total") == 0
    assert calculator_value(samples, "calculator_heartbeat_age_seconds") < 15

    runaway = insert(db, RUNAWAY)
    wait_done(db, [runaway], timeout=30)
    samples = wait_for(lambda: (s := scrape(client)) and
                       calculator_value(s, "calculator_evaluation_timeouts_total") == 1 and s,
                       timeout=20, interval=0.5, message="the timeout to be counted")
    assert calculator_value(samples, "calculator_evaluation_processes_killed_total") == 1
    assert calculator_value(samples, "calculator_evaluation_processes_died_total") == 0
    assert calculator_value(samples, "calculator_results_stored_total") == 4
    assert calculator_value(samples, "calculator_evaluation_duration_seconds_sum") >= 1
    assert value(samples, "calculator_queue_finished_tasks_total", status="error") == 2

    os.kill(wait_for(calc.evaluator_pids, message="the new evaluation process")[0], signal.SIGKILL)
    wait_for(lambda: calculator_value(scrape(client), "calculator_evaluation_processes_died_total") == 1,
             timeout=20, interval=0.5, message="the death to be counted")


def test_a_stale_result_is_counted(client, db, calculators):
    """The task is finished by someone else (as by a Calculator that took
    over after the lease ran out) while this one calculates it."""
    db.execute("DELETE FROM calculators")  # those killed by earlier tests
    calc = calculators(num_processes=1)
    task_id = insert(db, SLOW)
    wait_for(lambda: f"claimed ids={task_id}" in calc.log(), message="the claim")
    db.execute("UPDATE tasks SET status = 'done', result = '300000.0', finished_at = now(), "
               "lease_token = gen_random_uuid() WHERE id = %s", (task_id,))
    wait_for(lambda: "discarded stale results" in calc.log(), timeout=30, message="the stale result")
    wait_for(lambda: calculator_value(scrape(client), "calculator_stale_results_discarded_total") == 1,
             timeout=20, interval=0.5, message="the stale result to be counted")
    assert calculator_value(scrape(client), "calculator_results_stored_total") == 0


def test_a_scrape_without_the_database_still_answers(db):
    from api import create_app
    from core.settings import ApiSettings
    app = create_app({"DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/none",
                      "CHECK_SCHEMA": False, "SETTINGS": ApiSettings(db_timeout=0.3)})
    try:
        samples = scrape(app.test_client())
        assert value(samples, "calculator_database_up") == 0
        assert not any(name.startswith("calculator_queue") for name, _ in samples)
    finally:
        app.extensions["pool"].close()


@pytest.mark.parametrize("given_dir", [True, False], ids=["PROMETHEUS_MULTIPROC_DIR set", "unset"])
def test_http_durations_add_up_across_gunicorn_workers(api_url, db, tmp_path, given_dir):
    """Two worker processes answer; every scrape, whichever answers it, counts all requests."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(DATABASE_URL=api_url, BIND=f"127.0.0.1:{port}", PYTHONPATH=str(ROOT),
               WEB_CONCURRENCY="2", GUNICORN_THREADS="2", TMPDIR=str(tmp_path))
    if given_dir:
        metrics_dir = tmp_path / "prometheus"
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        metrics_dir.mkdir()
        (metrics_dir / "histogram_1.db").write_bytes(b"left over from an earlier run")
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base), timeout=30, interval=0.1, message="gunicorn")

        def hammer():
            for _ in range(25):
                assert request(base, "GET", "/healthz")[0] == 200

        if not given_dir:  # gunicorn made one in TMPDIR
            wait_for(lambda: list(tmp_path.glob("calculator-metrics-*")), timeout=10,
                     message="gunicorn's metrics directory")
            (metrics_dir,) = tmp_path.glob("calculator-metrics-*")

        def both_workers_answered():
            # Which worker accepts a connection is the kernel's choice: keep
            # sending until each has recorded a request (or the deadline).
            threads = [threading.Thread(target=hammer) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            return len([p for p in metrics_dir.iterdir() if p.name.startswith("histogram_")]) == 2

        wait_for(both_workers_answered, timeout=60, interval=0, message="both workers to answer")
        key = {"method": "GET", "route": "/healthz", "status": "200"}
        for _ in range(6):  # scrapes land on either worker
            status, _, text = request(base, "GET", "/metrics")
            assert status == 200
            # the readiness polls above count too: at least our 200, never a share of them
            assert 200 <= value(parse(text), "calculator_http_request_duration_seconds_count", **key) <= 200 + 300
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    assert not list(tmp_path.glob("calculator-metrics-*")), "the directory gunicorn made is removed"


def test_pending_tasks_and_their_age_per_key_with_bounded_labels(client, db, monkeypatch):
    """The keys with the most pending tasks by name (TOP_KEYS, 1 here), the
    others summed as one series, tasks without a key as another."""
    from api import metrics
    from api.keys import create_key
    monkeypatch.setattr(metrics, "TOP_KEYS", 1)
    for name in ("alice", "bob", "carol"):
        create_key(db, name)
    db.execute("INSERT INTO tasks (expression, owner, created_at) VALUES "
               "('1', 1, now() - interval '30 s'), ('1', 1, now()), ('1', 1, now()), "
               "('1', 2, now() - interval '90 s'), ('1', 3, now()), ('1', NULL, now() - interval '10 s')")
    db.execute("INSERT INTO tasks (expression, owner, status, result, finished_at) VALUES ('1', 2, 'done', '1', now())")
    samples = scrape(client)
    keys = {dict(pairs)["key"] for (name, pairs) in samples if name == "calculator_key_pending_tasks"}
    assert keys == {"alice", "(other keys)", "(none)"}
    assert value(samples, "calculator_key_pending_tasks", key="alice") == 3
    assert value(samples, "calculator_key_pending_tasks", key="(other keys)") == 2
    assert value(samples, "calculator_key_pending_tasks", key="(none)") == 1
    assert 90 <= value(samples, "calculator_key_oldest_pending_age_seconds", key="(other keys)") < 150
    assert 30 <= value(samples, "calculator_key_oldest_pending_age_seconds", key="alice") < 90
    assert 10 <= value(samples, "calculator_key_oldest_pending_age_seconds", key="(none)") < 70


def test_tasks_killed_by_cause_timeout_memory_and_cancel(client, db, calculators):
    """Real kills, one of each cause: a runaway past CALCULATION_TIMEOUT, a
    calculation past MEMORY_LIMIT_MB, a runaway cancelled while it runs."""
    db.execute("DELETE FROM calculators")  # those killed by earlier tests
    killed = "calculator_tasks_killed_total"

    def counts():
        samples = scrape(client)
        return tuple(calculator_value(samples, killed, cause=c) for c in ("timeout", "memory", "cancel"))

    calc = calculators(calculation_timeout=1, num_processes=1)
    timed_out = insert(db, RUNAWAY)
    assert wait_done(db, [timed_out], timeout=30)[timed_out] == ("error", None, "calculation timed out after 1 s of CPU time")
    wait_for(lambda: counts() == (1, 0, 0), timeout=20, interval=0.5, message="the timeout to be counted")
    calc.stop()

    # A Calculator's series end with it: the second one counts its own kills only.
    calc = calculators(calculation_timeout=60, memory_limit_mb=256, num_processes=1)
    bomb = insert(db, "2**(2**34)")  # two gigabytes of digits
    assert wait_done(db, [bomb], timeout=60)[bomb] == \
        ("error", None, "out of memory: the calculation needs too much memory")
    wait_for(lambda: counts() == (0, 1, 0), timeout=20, interval=0.5, message="the memory kill to be counted")

    runaway = insert(db, RUNAWAY)
    wait_for(lambda: calc.busy_evaluator_pids(), timeout=30, message="the runaway to run")
    assert db.execute("SELECT status FROM cancel_tasks(ARRAY[%s::bigint])", (runaway,)).fetchone()[0] == "cancelled"
    wait_for(lambda: f"cancelled task={runaway}: killing its evaluation process" in calc.log(),
             timeout=20, message="the cancelled runaway's process to be killed")
    wait_for(lambda: counts() == (0, 1, 1), timeout=20, interval=0.5, message="the cancel to be counted")
    assert "evaluation process died" not in calc.log()


# --- per key: running tasks and evaluation seconds (calculators.tenant_usage) ----

def key_samples(samples: dict, name: str) -> dict[str, float]:
    return {dict(pairs)["key"]: v for (n, pairs), v in samples.items() if n == name}


def test_running_tasks_and_evaluation_seconds_per_key_summed_over_the_live_calculators(
        client, db, calculator_rows, monkeypatch):
    from api import metrics
    from api.keys import create_key
    monkeypatch.setattr(metrics, "TOP_KEYS", 2)
    for name in ("alice", "bob", "carol", "dave"):
        create_key(db, name)
    write_tenant_usage(calculator_rows, {"1": [10, 5, 2], "2": [3, 1, 0], "none": [1.5, 0.5, 1]})
    write_tenant_usage(calculator_rows, {"1": [4, 2, 1], "3": [7, 0, 3], "4": [100, 0, 0]})
    write_tenant_usage(calculator_rows, {"1": [1000, 60, 9], "2": [1000, 60, 9]}, heartbeat_age=20)  # dead
    samples = scrape(client)
    # By activity (last minute's seconds, then running tasks): alice 7 s, bob 1 s; carol and dave folded.
    assert key_samples(samples, "calculator_key_running_tasks") == {
        "alice": 3, "bob": 0, "(other keys)": 3, "(none)": 1}
    assert key_samples(samples, "calculator_key_evaluation_seconds_total") == {
        "alice": 14, "bob": 3, "(other keys)": 107, "(none)": 1.5}


def test_per_key_usage_is_empty_without_live_calculators_figures(client, db, calculator_rows):
    write_tenant_usage(calculator_rows, {})  # a Calculator of today's main: its column stays {}
    samples = scrape(client)
    assert key_samples(samples, "calculator_key_running_tasks") == {}
    assert value(samples, "calculator_database_up") == 1


usage_figures = st.tuples(st.integers(0, 1000), st.integers(0, 60), st.integers(0, 8))
calculator_usage = st.dictionaries(st.sampled_from(["1", "2", "3", "4", "5", "none"]), usage_figures, max_size=6)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(live=st.lists(calculator_usage, max_size=3), dead=st.lists(calculator_usage, max_size=2),
       top=st.integers(0, 5))
def test_per_key_usage_against_the_sum_over_live_calculators(app, db, calculator_rows, monkeypatch,
                                                             live, dead, top):
    """The oracle: each tenant's figures summed here over the live rows only.
    Every figure lands in exactly one series; at most top + 2 series; a key
    named is at least as active as every key folded into "(other keys)"."""
    from api import metrics
    from api.keys import create_key
    monkeypatch.setattr(metrics, "TOP_KEYS", top)
    if not db.execute("SELECT count(*) FROM api_keys").fetchone()[0]:
        for name in ("k1", "k2", "k3", "k4", "k5"):
            create_key(db, name)
    calculator_rows.execute("DELETE FROM calculators")
    for usage in live:
        write_tenant_usage(calculator_rows, usage)
    for usage in dead:
        write_tenant_usage(calculator_rows, usage, heartbeat_age=30)
    expected: dict[str, list[float]] = {}
    for usage in live:
        for tenant, figures in usage.items():
            expected.setdefault(tenant, [0, 0, 0])
            for i, figure in enumerate(figures):
                expected[tenant][i] += figure
    samples = scrape(app.test_client())
    running = key_samples(samples, "calculator_key_running_tasks")
    seconds = key_samples(samples, "calculator_key_evaluation_seconds_total")
    assert running.keys() == seconds.keys()
    assert len(running) <= top + 2
    assert sum(seconds.values()) == sum(f[0] for f in expected.values())
    assert sum(running.values()) == sum(f[2] for f in expected.values())
    assert seconds.get("(none)", 0) == expected.get("none", [0])[0]
    named = {name for name in running if not name.startswith("(")}
    assert len(named) == min(top, len([t for t in expected if t != "none"]))
    for name in named:
        assert (seconds[name], running[name]) == (expected[name[1:]][0], expected[name[1:]][2])
    activity = {t: (f[1], f[2], f[0]) for t, f in expected.items() if t != "none"}
    folded = [activity[t] for t in activity if f"k{t}" not in named]
    assert all(activity[name[1:]] >= max(folded, default=(0, 0, 0)) for name in named)
