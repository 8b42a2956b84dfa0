"""A command-line client for calculator-service (standard library only).

    python -m api.client "x*t**y" x=10 t=11 y=1     # prints 110
    python -m api.client --file expressions.txt     # one expression per line, in bulk

Submits, waits for the outcome with ?wait= (no polling loop), prints the
result, or the error on stderr. Exit status: 0 when every result is a
number, 1 when any is an error, 2 when the request itself was refused or the
API could not be reached, 3 when results were still pending after --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal

from core.errors import ExpressionError
from core.numbers import variable_value

WAIT_SECONDS = 30        # the longest ?wait= the API allows by default
MAX_BATCH = 1000         # the API's default MAX_BATCH
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)  # after a 503 or a dropped connection

EPILOG = """\
where the API is:
  --url, else the CALCULATOR_URL environment variable, else http://127.0.0.1:5000

the API key (when the service runs with AUTH=required):
  --key, else the CALCULATOR_API_KEY environment variable

the --file format:
  one expression per line, without variables; blank lines and lines starting
  with # are skipped. Submitted in batches of 1,000; errors name the line.

retries:
  every submission carries an Idempotency-Key, so a submission whose answer was
  lost (a dropped connection, a 503) is sent again safely: it cannot create a
  second task. A 429 (a key's rate or unfinished-task limit) is retried after
  the Retry-After the API names, a few times.
"""


class ApiError(RuntimeError):
    pass


class Client:
    def __init__(self, base_url: str, timeout: float = WAIT_SECONDS + 10, key: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}

    def call(self, method: str, path: str, payload=None, headers: dict | None = None) -> tuple[int, dict]:
        """One request; a 503, a 429 or a lost connection is retried a few times
        (submissions carry an Idempotency-Key, so retrying them is safe); a
        429 after the Retry-After it names."""
        for delay in (*RETRY_DELAYS, None):
            try:
                status, body, retry_after = self._call_once(method, path, payload, headers)
            except ApiError:
                if delay is None:
                    raise
            else:
                if status not in (429, 503) or delay is None:
                    return status, body
                delay = max(delay, retry_after)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _call_once(self, method: str, path: str, payload, headers: dict | None) -> tuple[int, dict, float]:
        """(status, body, Retry-After seconds or 0)."""
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **self.auth,
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read()), 0.0
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read())
            except ValueError:
                body = {"msg": f"HTTP {error.code}"}
            retry_after = error.headers.get("Retry-After", "0")
            return error.code, body, float(retry_after) if retry_after.isdigit() else 0.0
        except OSError as error:
            raise ApiError(f"cannot reach {self.base_url}: {error}") from None

    def submit(self, expression: str, variables: dict) -> int:
        status, body = self.call("POST", "/api/expression", {"expression": expression, "variables": variables},
                                 {"Idempotency-Key": str(uuid.uuid4())})
        if status != 202:
            raise ApiError(body.get("msg", f"HTTP {status}"))
        return body["expression_id"]

    def submit_many(self, items: list[dict]) -> tuple[list[int], list[dict]]:
        """(ids, []) when accepted, ([], errors by index) when refused."""
        status, body = self.call("POST", "/api/expressions", {"items": items},
                                 {"Idempotency-Key": str(uuid.uuid4())})
        if status == 202:
            return body["expression_ids"], []
        if status == 400 and body.get("errors"):
            return [], body["errors"]
        raise ApiError(body.get("msg", f"HTTP {status}"))

    def outcome(self, task_id: int, wait: float) -> dict:
        """The outcome, or the pending answer after at most wait seconds."""
        status, body = self.call("GET", f"/api/result/{task_id}?wait={max(0.0, min(wait, WAIT_SECONDS)):.3f}")
        if status not in (200, 202):
            raise ApiError(body.get("msg", f"HTTP {status}"))
        return body

    def outcomes(self, ids: list[int]) -> list[dict]:
        status, body = self.call("GET", "/api/results?ids=" + ",".join(map(str, ids)))
        if status != 200:
            raise ApiError(body.get("msg", f"HTTP {status}"))
        return body["results"]


class StillPending(RuntimeError):
    pass


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def parse_variables(assignments: list[str]) -> dict:
    variables = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise ApiError(f"variables are name=value, not {assignment!r}")
        if not _JSON_NUMBER.fullmatch(value):
            raise ApiError(f"the value of {name} is not a number: {value!r}")
        # The number the API will take it for (core/numbers.py): 1e2 is 100,
        # 1e400 a 401-digit integer, 2.5 a float.
        try:
            variables[name] = variable_value(name, Decimal(value))
        except ExpressionError as error:
            raise ApiError(str(error)) from None
    return variables


def run_one(client: Client, expression: str, assignments: list[str], timeout: float) -> int:
    task_id = client.submit(expression, parse_variables(assignments))
    deadline = time.monotonic() + timeout
    # One waiting request at a time, each at most WAIT_SECONDS, and no more
    # after the deadline: the client never leaves waits behind.
    while True:
        body = client.outcome(task_id, deadline - time.monotonic())
        if body["status"] != "pending":
            break
        if time.monotonic() >= deadline:
            raise StillPending(f"expression {task_id} is still pending after {timeout:g} s; "
                               f"ask later: curl {client.base_url}/api/result/{task_id}")
    if body["status"] == "done":
        print(json.dumps(body["result"]))
        return 0
    print(f"error: {body['msg']}", file=sys.stderr)
    return 1


def read_expressions(path: str) -> list[tuple[int, str]]:
    """(line number, expression) of every line that is not blank or a comment."""
    with open(path) as lines:
        return [(number, line.strip()) for number, line in enumerate(lines, 1)
                if line.strip() and not line.lstrip().startswith("#")]


def submit_file(client: Client, lines: list[tuple[int, str]], batch: int = MAX_BATCH) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(lines), batch):
        chunk = lines[start:start + batch]
        accepted, errors = client.submit_many([{"expression": e} for _, e in chunk])
        if errors:
            details = "".join(f"\n  line {chunk[e['index']][0]}: {e['msg']}" for e in errors)
            if ids:
                done = (f"lines {lines[0][0]}-{lines[start - 1][0]} were submitted before "
                        f"(expression ids {ids[0]}-{ids[-1]}); ")
            else:
                done = ""
            raise ApiError(f"{done}{len(errors)} of the {len(chunk)} expressions on lines "
                           f"{chunk[0][0]}-{chunk[-1][0]} are invalid, so nothing from line "
                           f"{chunk[0][0]} on was submitted:{details}")
        ids += accepted
    return ids


def run_file(client: Client, path: str, timeout: float) -> int:
    lines = read_expressions(path)
    if not lines:
        raise ApiError(f"{path} has no expressions (blank lines and # comments are skipped)")
    ids = submit_file(client, lines)
    deadline = time.monotonic() + timeout
    finished: dict[int, dict] = {}
    while len(finished) < len(ids):
        waiting = [i for i in ids if i not in finished]
        if time.monotonic() >= deadline:
            print(file=sys.stderr)
            raise StillPending(f"{len(waiting)} of {len(ids)} expressions are still pending after "
                               f"{timeout:g} s (ids {waiting[0]}-{waiting[-1]}); ask later with "
                               f"{client.base_url}/api/results?ids=...")
        # One waiting request at a time: it returns when the oldest is done.
        client.outcome(waiting[0], min(5.0, deadline - time.monotonic()))
        for start in range(0, len(waiting), MAX_BATCH):
            for body in client.outcomes(waiting[start:start + MAX_BATCH]):
                if body["status"] != "pending":
                    finished[body["expression_id"]] = body
        print(f"\r{len(finished)}/{len(ids)} done", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    failed = 0
    for (number, expression), task_id in zip(lines, ids):
        body = finished[task_id]
        if body["status"] == "done":
            print(f"{expression} = {json.dumps(body['result'])}")
        else:
            failed += 1
            print(f"{expression} : error: {body['msg']}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.client", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("expression", nargs="?", help="the expression, e.g. 'x*t**y'")
    parser.add_argument("variables", nargs="*", help="name=value for each variable, e.g. x=10")
    parser.add_argument("--file", help="submit every line of this file (see the format below)")
    parser.add_argument("--url", default=os.environ.get("CALCULATOR_URL", "http://127.0.0.1:5000"),
                        help="the API (default: $CALCULATOR_URL or http://127.0.0.1:5000)")
    parser.add_argument("--key", default=os.environ.get("CALCULATOR_API_KEY"),
                        help="the API key, with AUTH=required (default: $CALCULATOR_API_KEY)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for results before giving up with exit status 3 (default 120)")
    args = parser.parse_args(argv)
    if args.file and args.expression:
        parser.error("give an expression or --file, not both")
    if not args.file and not args.expression:
        parser.error("give an expression (e.g. \"x*2\" x=21) or --file with one expression per line")
    key = (args.key or "").strip() or None  # a key read from a file keeps its line end
    if key is not None and not (key.isascii() and key.isprintable() and " " not in key):
        parser.error("the API key holds characters no key has (spaces, control or non-ASCII characters): "
                     "check --key or CALCULATOR_API_KEY")
    client = Client(args.url, key=key)
    started = time.monotonic()
    try:
        if args.file:
            code = run_file(client, args.file, args.timeout)
        else:
            code = run_one(client, args.expression, args.variables, args.timeout)
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StillPending as pending:
        print(f"pending: {pending}", file=sys.stderr)
        return 3
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.file:
        print(f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
