"""A command-line client (standard library only).

    python -m api.client "x*t**y" x=10 t=11 y=1     # prints 110
    python -m api.client --file expressions.txt     # one expression per line, in bulk

Submits, waits for the outcome with ?wait= (no polling loop), prints the
result, or the error on stderr. Exit status: 0 when every result is a
number, 1 when any is an error, 2 when the request itself was refused.
CALCULATOR_URL (or --url) says where the API is (default http://127.0.0.1:5000).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

WAIT_SECONDS = 30


class ApiError(RuntimeError):
    pass


class Client:
    def __init__(self, base_url: str, timeout: float = WAIT_SECONDS + 10):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, payload=None) -> tuple[int, dict]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read())
            except ValueError:
                body = {"msg": f"HTTP {error.code}"}
            return error.code, body
        except OSError as error:
            raise ApiError(f"cannot reach {self.base_url}: {error}") from None

    def submit(self, expression: str, variables: dict) -> int:
        status, body = self.call("POST", "/api/expression", {"expression": expression, "variables": variables})
        if status != 202:
            raise ApiError(body.get("msg", f"HTTP {status}"))
        return body["expression_id"]

    def submit_many(self, items: list[dict]) -> list[int]:
        status, body = self.call("POST", "/api/expressions", {"items": items})
        if status != 202:
            details = "".join(f"\n  line {e['index'] + 1}: {e['msg']}" for e in body.get("errors", []))
            raise ApiError(body.get("msg", f"HTTP {status}") + details)
        return body["expression_ids"]

    def outcome(self, task_id: int, wait: float = WAIT_SECONDS) -> dict:
        while True:
            status, body = self.call("GET", f"/api/result/{task_id}?wait={wait:g}")
            if status == 202:
                continue  # still pending after the wait: ask again
            if status != 200:
                raise ApiError(body.get("msg", f"HTTP {status}"))
            return body

    def outcomes(self, ids: list[int]) -> list[dict]:
        status, body = self.call("GET", "/api/results?ids=" + ",".join(map(str, ids)))
        if status != 200:
            raise ApiError(body.get("msg", f"HTTP {status}"))
        return body["results"]


def parse_variables(assignments: list[str]) -> dict:
    variables = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise ApiError(f"variables are name=value, not {assignment!r}")
        try:
            variables[name] = int(value)
        except ValueError:
            try:
                variables[name] = float(value)
            except ValueError:
                raise ApiError(f"the value of {name} is not a number: {value!r}") from None
    return variables


def run_one(client: Client, expression: str, assignments: list[str]) -> int:
    task_id = client.submit(expression, parse_variables(assignments))
    body = client.outcome(task_id)
    if body["status"] == "done":
        print(json.dumps(body["result"]))
        return 0
    print(f"error: {body['msg']}", file=sys.stderr)
    return 1


def run_file(client: Client, path: str, batch: int = 1000) -> int:
    with open(path) as lines:
        expressions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    ids = []
    for start in range(0, len(expressions), batch):
        ids += client.submit_many([{"expression": e} for e in expressions[start:start + batch]])
    finished: dict[int, dict] = {}
    while len(finished) < len(ids):
        waiting = [i for i in ids if i not in finished]
        client.outcome(waiting[0], wait=5)  # sleeps server-side until the oldest is done
        for start in range(0, len(waiting), batch):
            for body in client.outcomes(waiting[start:start + batch]):
                if body["status"] != "pending":
                    finished[body["expression_id"]] = body
        print(f"\r{len(finished)}/{len(ids)} done", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    failed = 0
    for expression, task_id in zip(expressions, ids):
        body = finished[task_id]
        if body["status"] == "done":
            print(f"{expression} = {json.dumps(body['result'])}")
        else:
            failed += 1
            print(f"{expression} : error: {body['msg']}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.client", description=__doc__.splitlines()[0])
    parser.add_argument("expression", nargs="?", help="the expression, e.g. 'x*t**y'")
    parser.add_argument("variables", nargs="*", help="name=value for each variable")
    parser.add_argument("--file", help="submit every line of this file (no variables)")
    parser.add_argument("--url", default=os.environ.get("CALCULATOR_URL", "http://127.0.0.1:5000"))
    args = parser.parse_args(argv)
    if bool(args.file) == bool(args.expression):
        parser.error("give an expression or --file, not both")
    client = Client(args.url)
    started = time.monotonic()
    try:
        code = run_file(client, args.file) if args.file else run_one(client, args.expression, args.variables)
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.file:
        print(f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
