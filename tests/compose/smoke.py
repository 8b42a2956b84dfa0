"""Compose smoke run: the real docker-compose stack, end to end.

    make compose-smoke        (needs a Docker engine and docker-compose;
                               ../shared/docker-sandbox/setup provides both)

Brings the stack up with 3 Calculators (AUTH=required, as deploy/api.env
says), makes an API key with `docker-compose run --rm migrate python -m
api.keys create`, checks that a request without it is refused, submits the
README's example and 200 more expressions through the published port with
it, docker-kills one Calculator container mid-run, checks every result, then
takes the stack down (-v).
Standard library only; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

BASE = "http://127.0.0.1:5000"
SLOW = "fac(200000) / fac(199999)"  # keeps the Calculators busy when one is killed


def compose(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker-compose", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"docker-compose {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


KEY = {}  # the Authorization header, once the key is made


def call(method: str, path: str, payload=None):
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **KEY})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_ready(deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if call("GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the API did not become ready")


def submissions():
    yield {"expression": "x*t**y", "variables": {"x": 10, "y": 1, "t": 11}}, ("done", 110)
    for i in range(200):
        if i % 25 == 0:
            yield {"expression": SLOW}, ("done", 200000.0)
        elif i % 10 == 0:
            yield {"expression": "x / (y - y)", "variables": {"x": i, "y": 3}}, ("error", "division by zero")
        else:
            yield {"expression": "a * b + c", "variables": {"a": i, "b": 7, "c": 3}}, ("done", i * 7 + 3)


def main() -> int:
    started = time.monotonic()
    print("compose up --scale calculator=3 ...", flush=True)
    compose("up", "-d", "--build", "--scale", "calculator=3")
    try:
        wait_ready(time.monotonic() + 120)
        status, body = call("POST", "/api/expression", {"expression": "1"})
        if status != 401:
            raise SystemExit(f"without a key: expected 401, got {status} {body}")
        key = compose("run", "--rm", "-T", "migrate", "python", "-m", "api.keys", "create", "smoke").split()[-1]
        KEY["Authorization"] = f"Bearer {key}"
        print(f"made an API key ({key[:8]}...); without it: 401", flush=True)
        expected, killed = {}, None
        for n, (payload, outcome) in enumerate(submissions()):
            status, body = call("POST", "/api/expression", payload)
            if status != 202:
                raise SystemExit(f"submission {payload} refused: {status} {body}")
            expected[body["expression_id"]] = outcome
            if n == 60:
                killed = compose("ps", "-q", "calculator").split()[0]
                subprocess.run(["docker", "kill", killed], check=True, capture_output=True)
                print(f"killed calculator container {killed[:12]} after {n + 1} submissions", flush=True)
        print(f"submitted {len(expected)} expressions", flush=True)
        deadline = time.monotonic() + 180
        wrong = {}
        for task_id, outcome in expected.items():
            while True:
                status, body = call("GET", f"/api/result/{task_id}")
                if status != 202 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            got = (body.get("status"), body.get("result", body.get("msg")))
            if got != outcome:
                wrong[task_id] = (got, outcome)
        running = len(compose("ps", "-q", "calculator").split())
        print(f"results checked: {len(expected) - len(wrong)} right, {len(wrong)} wrong; "
              f"calculator containers listed: {running}")
        for task_id, (got, want) in sorted(wrong.items())[:20]:
            print(f"  id {task_id}: got {got}, expected {want}")
        print(f"done in {time.monotonic() - started:.0f} s")
        return 1 if wrong else 0
    finally:
        print("compose down -v ...", flush=True)
        compose("down", "-v", "-t", "20", check=False)


if __name__ == "__main__":
    sys.exit(main())
