"""OpenTelemetry traces (docs/operations.md, "Traces"): a request's trace,
continued from its traceparent, holds the API's request and insert spans
and each task's claim, evaluation and store in the Calculator, as an
in-process OTLP receiver sees them; a retry is a second attempt in the same
trace; log lines carry the trace id; without the settings nothing of
opentelemetry is even imported."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.http_client import post_json, request
from tests.otlp_receiver import OtlpReceiver
from tests.support import ROOT, ApiServer, wait_done, wait_for

SLOW = "fac(300000) / fac(299999)"  # a second or two of honest work; result 300000.0
SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture
def otlp():
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def traceparent() -> tuple[str, str, str]:
    """(traceparent, trace id, span id) of a caller's sampled span."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def lowered(settings: dict) -> dict:
    return {k.lower(): v for k, v in settings.items()}


def named(spans, name):
    return [s for s in spans if s.name == name]


def task_spans(spans, task_id: int, name: str):
    return [s for s in spans if s.name == name and s.attributes.get("calculator.task.id") == task_id]


@pytest.mark.parametrize("limits", [{}, {"max_pending_per_key": 100}],
                         ids=["plain insert", "insert under the limits"])
def test_a_requests_trace_holds_the_api_and_the_calculator_spans_of_its_tasks(
        db, api_url, calculators, otlp, tmp_path, limits):
    api = ApiServer(api_url, tmp_path / "api.log", web_concurrency=1, **limits, **lowered(otlp.env()))
    calc = calculators(**lowered(otlp.env()))
    try:
        assert "traces=otlp" in calc.log()
        one, one_trace, one_caller = traceparent()
        status, _, body = request(api.base, "POST", "/api/expression", json.dumps({"expression": "2+2"}),
                                  {"Content-Type": "application/json", "traceparent": one})
        assert status == 202, body
        single = body["expression_id"]
        many, many_trace, _ = traceparent()
        status, _, body = request(api.base, "POST", "/api/expressions",
                                  json.dumps({"items": [{"expression": "1/0"}, {"expression": "x*3",
                                                                                "variables": {"x": 2}}]}),
                                  {"Content-Type": "application/json", "traceparent": many})
        assert status == 202, body
        bulk = body["expression_ids"]
        assert wait_done(db, [single, *bulk], timeout=60) == {single: ("done", 4, None),
                                                  bulk[0]: ("error", None, "division by zero"),
                                                  bulk[1]: ("done", 6, None)}

        # The request's span continues the caller's trace; the insert is its child.
        def complete(spans):
            of = {trace: [s for s in spans if s.trace_id == trace] for trace in (one_trace, many_trace)}
            return all(len(named(of[trace], "INSERT tasks")) == 1 and any(s.kind == SERVER for s in of[trace])
                       for trace in of) and len(task_spans(spans, single, "store")) == 1 and \
                len(named(of[many_trace], "store")) == 2 and spans
        spans = otlp.wait(complete, message="the API's spans and the store spans of the three tasks")
        mine = otlp.of_trace(one_trace)
        (http,) = [s for s in mine if s.kind == SERVER]
        assert http.service == "calculator-api"
        assert http.name == "POST /api/expression"
        assert http.parent_span_id == one_caller
        (insert,) = named(mine, "INSERT tasks")
        assert insert.kind == CLIENT and insert.parent_span_id == http.span_id
        assert insert.attributes["calculator.tasks.first_id"] == single
        # What is stored with the task is the insert span's context...
        stored = db.execute("SELECT trace_context FROM tasks WHERE id = %s", (single,)).fetchone()[0]
        assert stored == f"00-{one_trace}-{insert.span_id}-01"
        # ...of which the Calculator's spans of the task are children, in the same trace.
        for name in ("claim", "evaluate", "store"):
            (span,) = task_spans(mine, single, name)
            assert span.service == "calculator"
            assert span.parent_span_id == insert.span_id
            assert span.attributes["calculator.task.attempt"] == 1
            assert span.start_ns <= span.end_ns
        (claim,), (evaluate,), (store,) = (task_spans(mine, single, n) for n in ("claim", "evaluate", "store"))
        assert claim.end_ns <= evaluate.end_ns <= store.start_ns
        assert store.attributes["calculator.task.status"] == "done"

        # The bulk submission: one trace, one insert, each task's spans in it.
        theirs = otlp.of_trace(many_trace)
        (insert,) = named(theirs, "INSERT tasks")
        assert insert.attributes["calculator.tasks.count"] == 2
        for task_id in bulk:
            assert {s.name for s in theirs if s.attributes.get("calculator.task.id") == task_id} == \
                {"claim", "evaluate", "store"}
        (failed,) = task_spans(theirs, bulk[0], "evaluate")
        assert (failed.status_code, failed.status_message) == (2, "division by zero")
        # Nothing else was traced (gunicorn's start was awaited on /healthz: not traced by default).
        assert {s.trace_id for s in spans} == {one_trace, many_trace}

        # Concurrent submissions share a group commit's INSERT: each task keeps its own request's trace.
        def submit(_):
            parent, trace_id, _ = traceparent()
            status, _, body = request(api.base, "POST", "/api/expression", json.dumps({"expression": "1+1"}),
                                      {"Content-Type": "application/json", "traceparent": parent})
            assert status == 202, body
            return body["expression_id"], trace_id
        with ThreadPoolExecutor(16) as pool:
            submitted = dict(pool.map(submit, range(48)))
        stored = dict(db.execute("SELECT id, substr(trace_context, 4, 32) FROM tasks WHERE id = ANY(%s)",
                                 (list(submitted),)).fetchall())
        assert stored == submitted

        # The Calculator's log lines say which trace each task is in.
        log = calc.log()
        assert f"{one_trace}:{single}" in log and f"{many_trace}:{bulk[0]}-{bulk[1]}" in log
        assert f"claimed ids={single} traces={one_trace}:{single}" in log
    finally:
        api.stop()


def test_a_retry_is_the_second_attempt_in_the_trace_psql_gave_the_task(db, calculators, otlp):
    """A psql user stores a traceparent with a task; its evaluation process
    is killed under it: the trace shows the failed evaluation of attempt 1,
    then attempt 2's claim, evaluation and store."""
    parent, trace_id, span_id = traceparent()
    calc = calculators(num_processes=1, calculation_timeout=60, **lowered(otlp.env()))
    task_id = db.execute("INSERT INTO tasks (expression, trace_context) VALUES (%s, %s) RETURNING id",
                         (SLOW, parent)).fetchone()[0]
    wait_for(lambda: f"claimed ids={task_id} traces={trace_id}:{task_id}" in calc.log(), timeout=30,
             message="the claim, with the trace id in its log line")
    victim = wait_for(calc.busy_evaluator_pids, timeout=30, message="the task to be calculated")[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_done(db, [task_id], timeout=60)[task_id] == ("done", 300000.0, None)
    spans = otlp.wait(lambda spans: task_spans(spans, task_id, "store"), message="the store span")
    spans = otlp.of_trace(trace_id)
    assert all(s.parent_span_id == span_id and s.service == "calculator" for s in spans)
    by_attempt = sorted((s.attributes["calculator.task.attempt"], s.name, s.status_code) for s in spans)
    assert by_attempt == [(1, "claim", 0), (1, "evaluate", 2), (2, "claim", 0), (2, "evaluate", 0),
                          (2, "store", 0)]
    (died,) = [s for s in spans if s.name == "evaluate" and s.status_code == 2]
    assert "died" in died.status_message
    assert f"task={task_id} trace_id={trace_id}" in calc.log()  # "evaluation process died ... task=N"
    # The evaluation processes (forks of a tracing Calculator) run no export thread of their own.
    children = calc.evaluator_pids()
    assert children
    wait_for(lambda: all(len(os.listdir(f"/proc/{pid}/task")) == 1 for pid in children),
             message="the evaluation processes to be single-threaded")


def test_a_traceparent_that_is_not_one_is_refused_by_the_database(db):
    parent, _, _ = traceparent()
    for bad in (parent.upper(), "01" + parent[2:], parent[:-1], f"00-{'0' * 32}-{parent[36:]}",
                f"{parent[:36]}{'0' * 16}-01", "hello"):
        with pytest.raises(psycopg.errors.CheckViolation, match="tasks_trace_context_is_a_traceparent"):
            db.execute("INSERT INTO tasks (expression, trace_context) VALUES ('1', %s)", (bad,))
    db.execute("INSERT INTO tasks (expression, trace_context) VALUES ('1', %s)", (parent,))


# The process runs a real Calculator, or the API's app with a real
# submission, until its task is finished, and then tells whether any
# opentelemetry module was imported.
CALCULATOR = textwrap.dedent("""
    import os, signal, sys, threading, time
    import psycopg
    from worker.__main__ import main

    def watch():
        with psycopg.connect(os.environ["WATCH_URL"], autocommit=True) as conn:
            while conn.execute("SELECT status FROM tasks WHERE id = %s",
                               (int(os.environ["TASK_ID"]),)).fetchone()[0] == "pending":
                time.sleep(0.02)
        time.sleep(0.2)  # the store's log line and its spans, if any
        imported = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print("OTEL MODULES", len(imported), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    sys.exit(main())
""")
API = textwrap.dedent("""
    import os, sys
    from api import create_app
    from core.logs import setup_logging
    setup_logging()
    app = create_app({"DATABASE_URL": os.environ["DATABASE_URL"]})
    client = app.test_client()
    answer = client.post("/api/expression", json={"expression": "6*7"},
                         headers={"traceparent": os.environ["TRACEPARENT"]})
    assert answer.status_code == 202, answer.get_json()
    assert client.get(answer.headers["Location"]).status_code == 202
    imported = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    print("OTEL MODULES", len(imported), flush=True)
    app.extensions["result_waiter"].close()
    app.extensions["pool"].close()
""")


@pytest.mark.parametrize("configured", [False, True], ids=["unconfigured", "configured"])
def test_opentelemetry_is_imported_only_when_configured(db, database_url, api_url, worker_url, otlp,
                                                         configured):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "OTEL_"))}
    env.update(PYTHONPATH=str(ROOT))
    if configured:
        env.update(otlp.env())
    parent, trace_id, _ = traceparent()

    api = subprocess.run([sys.executable, "-c", API], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=env | {"DATABASE_URL": api_url, "TRACEPARENT": parent})
    assert api.returncode == 0, api.stderr
    # A task that has a trace context, so that its trace-id paths run.
    task_id = db.execute("SELECT id FROM tasks").fetchone()[0]
    assert (db.execute("SELECT trace_context FROM tasks").fetchone()[0] is not None) == configured
    if not configured:
        db.execute("UPDATE tasks SET trace_context = %s", (parent,))
    calculator = subprocess.run([sys.executable, "-c", CALCULATOR], cwd=ROOT, capture_output=True,
                                text=True, timeout=60,
                                env=env | {"DATABASE_URL": worker_url, "WATCH_URL": database_url,
                                           "TASK_ID": str(task_id)})
    assert calculator.returncode == 0, calculator.stderr
    assert f"traces={trace_id}:{task_id}" in calculator.stderr  # the log lines carry it either way
    for process in (api, calculator):
        count = int(process.stdout.split("OTEL MODULES")[1].split()[0])
        assert (count > 0) == configured, process.stdout
