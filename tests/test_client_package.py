"""The client package as a user gets it: `pip install ./client` into a fresh
virtualenv (no Flask, no server code), used against the real API and
Calculators: calculate, wait, wait for many, list, cancel, retry a 503; the
`calc` command it installs, under AUTH=required with a pending limit."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from api.keys import create_key
from core.settings import ApiSettings
from tests.support import ROOT


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with nothing but the client package installed."""
    where = tmp_path_factory.mktemp("client-venv")
    source = where / "client"
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(where / "venv/bin/python"), "-m", "pip", "install", "--quiet", str(source)],
                   check=True, timeout=300, env=env, capture_output=True)
    return where / "venv"


def run(venv: Path, *args, cwd=None, **env) -> subprocess.CompletedProcess:
    """Outside the project: another directory, no PYTHONPATH, no project venv."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CALCULATOR_API_KEY", "CALCULATOR_URL")}
    return subprocess.run(list(args), cwd=cwd or venv, env=clean | env, capture_output=True, text=True,
                          timeout=120)


def test_the_package_has_no_flask_and_no_server_code(venv):
    probe = run(venv, str(venv / "bin/python"), "-c", textwrap.dedent("""
        import importlib.util, calculator_client
        print(calculator_client.__file__)
        print([m for m in ("flask", "api", "core", "worker", "psycopg") if importlib.util.find_spec(m)])
    """))
    assert probe.returncode == 0, probe.stderr
    where, found = probe.stdout.splitlines()
    assert str(venv) in where and found == "[]"


SCRIPT = """
import json, sys
from calculator_client import Client, ExpressionFailed, Refused
calc = Client(sys.argv[1], retry_for=30)
out = {}
out["calculate"] = calc.calculate("x*t**y", {"x": 10, "t": 11, "y": 1}, timeout=60)
try:
    calc.calculate("1/x", {"x": 0}, timeout=60)
except ExpressionFailed as failed:
    out["failed"] = [failed.msg, failed.expression_id > 0]
try:
    calc.submit("x+y", {"x": 1})
except Refused as refused:
    out["refused"] = [refused.status, refused.msg]
ids = calc.submit_many(["2+2", ("y*2", {"y": 21}), {"expression": "sqrt(16)"}])
out["wait_many"] = [o.get("result") for o in calc.wait_many(ids, timeout=60)]
one = calc.submit("3*3")
out["wait"] = calc.wait(one, timeout=60)["result"]
out["result"] = calc.result(one)["status"]
out["tasks"] = [t["expression"] for t in calc.tasks(page_size=2)]
out["done_tasks"] = len(list(calc.tasks(status=["done"])))
print(json.dumps(out))
"""


def test_it_calculates_waits_and_lists_against_the_real_service(venv, http_server, calculators):
    calculators()
    done = run(venv, str(venv / "bin/python"), "-c", SCRIPT, http_server)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "calculate": 110, "failed": ["division by zero", True], "refused": [400, "missing values for y"],
        "wait_many": [4, 42, 4.0], "wait": 9, "result": "done",
        "tasks": ["3*3", "sqrt(16)", "y*2", "2+2", "1/x", "x*t**y"], "done_tasks": 5}


@contextlib.contextmanager
def unavailable_at_first(target: str, times: int):
    """A proxy in front of the real API that answers its first `times`
    requests 503 with Retry-After: 1 (as the API does while its database is
    away), then forwards every request. Yields (url, requests seen)."""
    seen: list[tuple[str, str | None]] = []
    host, port = urlsplit(target).hostname, urlsplit(target).port

    class Proxy(BaseHTTPRequestHandler):
        def _serve(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.headers.get("Idempotency-Key")))
            if len(seen) <= times:
                status, headers, payload = 503, {"Retry-After": "1"}, b'{"msg": "database unavailable"}'
            else:
                upstream = http.client.HTTPConnection(host, port, timeout=60)
                upstream.request(self.command, self.path, body or None,
                                 {k: v for k, v in self.headers.items() if k.lower() != "host"})
                answer = upstream.getresponse()
                status, payload = answer.status, answer.read()
                headers = {"Retry-After": answer.getheader("Retry-After")} if answer.getheader("Retry-After") else {}
                upstream.close()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        thread.join(10)


def test_it_retries_a_503_with_the_same_idempotency_key(venv, http_server, calculators, db):
    calculators()
    with unavailable_at_first(http_server, 2) as (url, seen):
        done = run(venv, str(venv / "bin/python"), "-c",
                   "import sys; from calculator_client import Client; "
                   "print(Client(sys.argv[1], retry_for=30).calculate('6*7', timeout=60))", url)
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
    posts = [key for method, key in seen if method == "POST"]
    assert len(posts) == 3 and posts[0] and len(set(posts)) == 1, seen
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,), "one task, however many attempts"


@pytest.fixture
def keyed_server(api_url, db):
    """The API with AUTH=required and MAX_PENDING_PER_KEY=30 behind a real HTTP server."""
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True, "SETTINGS": ApiSettings.from_env(
        {"AUTH": "required", "MAX_PENDING_PER_KEY": "30"})})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    app.extensions["result_waiter"].close()
    app.extensions["pool"].close()


def test_calc_sends_a_file_in_batches_the_pending_limit_admits(venv, keyed_server, calculators, db, tmp_path):
    """100 expressions under MAX_PENDING_PER_KEY=30: calc sends batches of
    30 and waits for room (429 + Retry-After) instead of giving up."""
    key = create_key(db, "alice")
    calculators()
    path = tmp_path / "many.txt"
    path.write_text("".join(f"{i}*2\n" for i in range(100)))
    done = run(venv, str(venv / "bin/calc"), "--url", keyed_server, "--file", str(path), "--timeout", "110",
               CALCULATOR_API_KEY=key)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(f"{i}*2 = {i * 2}\n" for i in range(100))
    assert db.execute("SELECT count(*), count(DISTINCT owner) FROM tasks").fetchone() == (100, 1)


def test_calcs_ask_later_hint_carries_the_key_header(venv, keyed_server, db):
    key = create_key(db, "alice")  # no Calculator: the task stays pending
    pending = run(venv, str(venv / "bin/calc"), "--url", keyed_server, "--timeout", "0.3", "2+2",
                  CALCULATOR_API_KEY=key)
    assert pending.returncode == 3
    hint = pending.stderr.split("ask later: ", 1)[1].strip()
    assert hint == f"curl -H \"Authorization: Bearer $CALCULATOR_API_KEY\" '{keyed_server}/api/result/1'"
    assert key not in pending.stderr
    # The hint works as printed, in a shell that has the key.
    asked = subprocess.run(["sh", "-c", hint.replace("curl ", "curl -s ", 1)], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "CALCULATOR_API_KEY": key})
    assert json.loads(asked.stdout) == {"expression_id": 1, "status": "pending"}
