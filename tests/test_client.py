"""python -m api.client, run for real against a real HTTP server and Calculator."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def client(http_server, *args):
    return subprocess.run([sys.executable, "-m", "api.client", "--url", http_server, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


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
    result = subprocess.run([sys.executable, "-m", "api.client", "--url", "http://127.0.0.1:9", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "cannot reach http://127.0.0.1:9" in result.stderr
