"""The calc command (client/calculator_client/cli.py), run for real against a
real HTTP server and Calculator: from the source tree here (python -m
calculator_client), installed into a fresh virtualenv in test_client_package.py."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from calculator_client.cli import UsageError, parse_variables
from tests.support import ROOT

CALC = [sys.executable, "-m", "calculator_client"]
# The client package from the source tree, without installing it.
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "client")}


def client(http_server, *args, **env):
    return subprocess.run([*CALC, "--url", http_server, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=ENV | env)


def test_one_expression(http_server, calculators):
    calculators()
    done = client(http_server, "x*t**y", "x=10", "t=11", "y=1")
    assert (done.returncode, done.stdout) == (0, "110\n")
    failed = client(http_server, "1/x", "x=0")
    assert (failed.returncode, failed.stderr) == (1, "error: division by zero\n")
    floats = client(http_server, "x/4", "x=1.0")
    assert (floats.returncode, floats.stdout) == (0, "0.25\n")


def test_a_refused_request_says_why(http_server):
    refused = client(http_server, "x+y", "x=1")
    assert refused.returncode == 2
    assert refused.stderr == "error: missing values for y\n"
    bad = client(http_server, "x", "x=ten")
    assert (bad.returncode, bad.stderr) == (2, "error: the value of x is not a number: 'ten'\n")


def test_a_file_in_bulk(http_server, calculators, tmp_path):
    calculators()
    path = tmp_path / "expressions.txt"
    path.write_text("# a comment\n2+2\n\nsqrt(16)\n1/0\n")
    result = client(http_server, "--file", str(path))
    assert result.returncode == 1
    assert result.stdout == "2+2 = 4\nsqrt(16) = 4.0\n1/0 : error: division by zero\n"
    assert "3/3 done" in result.stderr


def test_unreachable_api(tmp_path):
    result = subprocess.run([*CALC, "--url", "http://127.0.0.1:9", "--timeout", "1", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 2 and "cannot reach http://127.0.0.1:9" in result.stderr


def test_it_sends_an_idempotency_key_and_gives_up_waiting_at_its_timeout(http_server, db):
    result = client(http_server, "--timeout", "0.5", "2+2")  # no Calculator runs
    assert result.returncode == 3
    assert "expression 1 is still pending after 0.5 s; ask later: curl 'http" in result.stderr
    assert db.execute("SELECT expression_ids FROM idempotency_keys").fetchall() == [([1],)]


def test_a_long_file_with_a_bad_line_names_it_and_says_what_was_submitted(http_server, db, tmp_path):
    path = tmp_path / "many.txt"
    lines = ["# header", ""] + [f"{i}+1" for i in range(1, 1101)]
    lines[1052] = "2+"  # line 1053 of the file, expression 1051
    path.write_text("\n".join(lines) + "\n")
    result = client(http_server, "--file", str(path))
    assert result.returncode == 2
    assert "lines 3-1002 were submitted before (expression ids 1-1000)" in result.stderr
    assert "nothing from line 1003 on was submitted" in result.stderr
    assert "\n  line 1053: " in result.stderr and result.stderr.count("\n  line ") == 1
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1000


def test_usage_mistakes_and_help(http_server):
    neither = client(http_server)
    assert neither.returncode == 2 and "give an expression (e.g." in neither.stderr
    both = client(http_server, "--file", "x.txt", "1+1")
    assert both.returncode == 2 and "not both" in both.stderr
    helped = client(http_server, "--help")
    assert "CALCULATOR_URL" in helped.stdout and "one expression per line" in helped.stdout


def test_a_submission_answered_503_is_sent_again_with_the_same_idempotency_key():
    """A stand-in API that is unavailable twice, then accepts: the client
    retries, and every attempt carries one key (so the API can dedupe)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from calculator_client import Client

    keys = []

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            keys.append(self.headers.get("Idempotency-Key"))
            status, body = (503, {"msg": "database unavailable"}) if len(keys) < 3 else (202, {"expression_id": 7})
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert Client(f"http://127.0.0.1:{server.server_port}", retry_for=10).submit("1+1", {}) == 7
    finally:
        server.shutdown()
        thread.join(10)
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1


@pytest.mark.parametrize("typed, sent", [
    ("x=1e400", 10**400), ("x=1e2", 100), ("x=2.5", 2.5), ("x=-3", -3), ("x=1e-5", 1e-05),
    ("x=-0.0", -0.0), ("x=-0e-3", -0.0), ("x=0.0", 0.0), ("x=-0", 0),
])
def test_variables_are_sent_as_the_api_reads_them(typed, sent):
    """The client applies the API's number rule (core/numbers.py, repeated in
    the client package, which holds no server code), so what it sends is what
    the API will calculate with: a float zero with its sign."""
    value = parse_variables([typed])["x"]
    assert value == sent and type(value) is type(sent)
    if isinstance(sent, float):
        assert math.copysign(1, value) == math.copysign(1, sent)


@pytest.mark.parametrize("typed, message", [
    ("x=nan", "the value of x is not a number: 'nan'"),
    ("x=abc", "the value of x is not a number: 'abc'"),
    ("x=1e-400", "variable 'x' is too small: it would be 0"),
    ("x", "variables are name=value, not 'x'"),
])
def test_variables_that_are_not_numbers_are_refused_before_sending(typed, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_variables([typed])


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"-?(0|[1-9][0-9]{0,4})(\.[0-9]{1,4})?([eE][-+]?[0-9]{1,3})?", fullmatch=True))
def test_the_clients_number_rule_is_the_apis(text):
    """The client package repeats core/numbers.py's rule (it holds no
    server code): against the API's own function as the oracle."""
    from decimal import Decimal

    from core.errors import ExpressionError
    from core.numbers import variable_value
    try:
        expected = variable_value("x", Decimal(text))
    except ExpressionError as error:
        with pytest.raises(UsageError) as refused:
            parse_variables([f"x={text}"])
        assert str(refused.value) == str(error)
        return
    value = parse_variables([f"x={text}"])["x"]
    assert value == expected and type(value) is type(expected)
    if isinstance(expected, float):
        assert math.copysign(1, value) == math.copysign(1, expected)
