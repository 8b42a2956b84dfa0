"""Client: calculator-service's HTTP API from Python.

Every call is one HTTP request (urllib), retried when it may safely be:
a connection that failed or dropped, a 503 (the database is away) and a 429
(a key's rate or unfinished-task limit) are sent again after the
Retry-After the service names (else a growing delay), until `retry_for`
seconds have passed. Submissions carry an Idempotency-Key, the same on
every attempt, so a retried submission never creates a second task.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Iterable, Iterator

DEFAULT_URL = "http://127.0.0.1:5000"
MAX_WAIT = 30.0           # the longest ?wait= the API allows by default (RESULT_MAX_WAIT)
MAX_BATCH = 1000          # the API's default MAX_BATCH
DELAYS = (0.2, 0.5, 1.0, 2.0)


class CalculatorError(Exception):
    """Anything the client reports. status: the HTTP status, if there was one."""

    def __init__(self, msg: str, status: int | None = None, body: dict | None = None):
        super().__init__(msg)
        self.msg, self.status, self.body = msg, status, body or {}


class Refused(CalculatorError):
    """The service refused the request (a 4xx): msg is its message."""


class InvalidItems(Refused):
    """A bulk submission with invalid items (nothing was submitted):
    errors is [{"index": i, "msg": ...}, ...]."""

    def __init__(self, msg: str, errors: list[dict], body: dict):
        super().__init__(msg, 400, body)
        self.errors = errors


class Unavailable(CalculatorError):
    """The service could not be reached, or stayed unavailable (503), for retry_for seconds."""


class ExpressionFailed(CalculatorError):
    """The expression was evaluated to an error (msg: the service's message, e.g. division by zero)."""

    def __init__(self, expression_id: int, msg: str):
        super().__init__(msg)
        self.expression_id = expression_id


class Cancelled(CalculatorError):
    def __init__(self, expression_id: int):
        super().__init__(f"expression {expression_id} was cancelled")
        self.expression_id = expression_id


class StillPending(CalculatorError):
    """Still pending when the time given to wait ran out."""

    def __init__(self, msg: str, expression_ids: list[int]):
        super().__init__(msg)
        self.expression_ids = expression_ids


class Client:
    """Client(url, key=None): key is the API key (AUTH=required)."""

    def __init__(self, url: str = DEFAULT_URL, key: str | None = None, *, retry_for: float = 60.0,
                 request_timeout: float = MAX_WAIT + 15):
        self.url = url.rstrip("/")
        self.key = key
        self.retry_for = retry_for
        self.request_timeout = request_timeout

    # --- one request, retried ------------------------------------------------

    def request(self, method: str, path: str, payload: Any = None, headers: dict | None = None,
                retry_for: float | None = None) -> tuple[int, dict]:
        """(status, JSON body) of a request; retried as the module says."""
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        for attempt in range(1_000_000):
            try:
                status, body, retry_after = self._once(method, path, payload, headers)
                failure = None
            except OSError as error:
                status, body, retry_after, failure = 0, {}, 0.0, error
            if failure is None and status not in (429, 503):
                return status, body
            delay = max(retry_after, DELAYS[min(attempt, len(DELAYS) - 1)])
            if time.monotonic() + delay > deadline:
                if failure is not None:
                    raise Unavailable(f"cannot reach {self.url}: {failure}") from None
                if status == 503:
                    raise Unavailable(body.get("msg", "service unavailable"), status, body)
                return status, body
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, payload: Any, headers: dict | None) -> tuple[int, dict, float]:
        data = json.dumps(payload).encode() if payload is not None else None
        sent = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        if self.key:
            sent["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout) as response:
                return response.status, _json(response.read(), response.status), 0.0
        except urllib.error.HTTPError as error:
            with error:
                body = _json(error.read(), error.code)
                retry_after = error.headers.get("Retry-After", "")
            return error.code, body, float(retry_after) if retry_after.isdigit() else 0.0

    def _expect(self, method: str, path: str, payload: Any = None, ok: tuple = (200,), **kwargs) -> dict:
        status, body = self.request(method, path, payload, **kwargs)
        if status not in ok:
            raise Refused(body.get("msg", f"HTTP {status}"), status, body)
        return body

    # --- submitting ----------------------------------------------------------

    def submit(self, expression: str, variables: dict | None = None, *, idempotency_key: str | None = None) -> int:
        """Submit one expression; its id."""
        body = self._expect("POST", "/api/expression", {"expression": expression, "variables": variables or {}},
                            ok=(202,), headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())})
        return body["expression_id"]

    def submit_many(self, items: Iterable, *, idempotency_key: str | None = None,
                    retry_for: float | None = None) -> list[int]:
        """Submit at most MAX_BATCH expressions at once, all or none; their ids
        in order. An item is an expression, (expression, variables) or
        {"expression": ..., "variables": ...}. Invalid items: InvalidItems."""
        payload = {"items": [_item(item) for item in items]}
        status, body = self.request("POST", "/api/expressions", payload, retry_for=retry_for,
                                    headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())})
        if status == 202:
            return body["expression_ids"]
        if status == 400 and body.get("errors"):
            raise InvalidItems(body.get("msg", "invalid items"), body["errors"], body)
        raise Refused(body.get("msg", f"HTTP {status}"), status, body)

    def cancel(self, expression_id: int) -> dict:
        """Cancel a pending task: its outcome ({"status": "cancelled"}); Refused (409) if it had finished."""
        return self._expect("POST", f"/api/result/{int(expression_id)}/cancel", {})

    # --- reading -------------------------------------------------------------

    def result(self, expression_id: int) -> dict:
        """The outcome now: {"expression_id", "status", "result" | "msg"}."""
        return self._expect("GET", f"/api/result/{int(expression_id)}", ok=(200, 202))

    def wait(self, expression_id: int, timeout: float | None = None) -> dict:
        """The outcome once it is no longer pending (long polls of at most
        MAX_WAIT seconds each); StillPending after timeout seconds (None: no limit)."""
        return self.wait_many([expression_id], timeout)[0]

    def wait_many(self, expression_ids: Iterable[int], timeout: float | None = None) -> list[dict]:
        """The outcomes of all, in order, once none is pending (one waiting
        request per MAX_BATCH ids at a time); StillPending after timeout."""
        ids = [int(i) for i in expression_ids]
        deadline = None if timeout is None else time.monotonic() + timeout
        outcomes: dict[int, dict] = {}
        while True:
            waiting = [i for i in ids if i not in outcomes]
            if not waiting:
                return [outcomes[i] for i in ids]
            left = MAX_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
            chunk = waiting[:MAX_BATCH]
            query = urllib.parse.urlencode({"ids": ",".join(map(str, chunk)), "wait": f"{min(left, MAX_WAIT):.3f}"})
            for outcome in self._expect("GET", f"/api/results?{query}")["results"]:
                if outcome["status"] != "pending":
                    outcomes[outcome["expression_id"]] = outcome
            if deadline is not None and time.monotonic() >= deadline:
                waiting = [i for i in ids if i not in outcomes]
                if waiting:
                    raise StillPending(f"{len(waiting)} of {len(ids)} expressions are still pending after "
                                       f"{timeout:g} s", waiting)

    def calculate(self, expression: str, variables: dict | None = None, timeout: float | None = None):
        """Submit, wait, and return the number (or boolean). ExpressionFailed
        with the service's message if it is an error; Refused if the
        submission was refused; StillPending after timeout."""
        expression_id = self.submit(expression, variables)
        try:
            return value_of(self.wait(expression_id, timeout))
        except StillPending as pending:
            raise StillPending(f"expression {expression_id} is still pending after {timeout:g} s",
                               pending.expression_ids) from None

    def tasks(self, status: str | Iterable[str] | None = None, *, since: str | None = None,
              until: str | None = None, owner: str | None = None, page_size: int = 100) -> Iterator[dict]:
        """Every task of the listing (GET /api/tasks), newest first, page after page."""
        query: dict[str, Any] = {"limit": page_size}
        if status is not None:
            query["status"] = status if isinstance(status, str) else ",".join(status)
        for name, value in (("since", since), ("until", until), ("owner", owner)):
            if value is not None:
                query[name] = value
        cursor = None
        while True:
            page = self._expect("GET", "/api/tasks?" + urllib.parse.urlencode(
                {**query, **({"cursor": cursor} if cursor else {})}))
            yield from page["tasks"]
            cursor = page["next"]
            if cursor is None:
                return


def value_of(outcome: dict):
    """The result of a finished outcome, or the exception it stands for."""
    if outcome["status"] == "done":
        return outcome["result"]
    if outcome["status"] == "cancelled":
        raise Cancelled(outcome["expression_id"])
    if outcome["status"] == "error":
        raise ExpressionFailed(outcome["expression_id"], outcome["msg"])
    raise Refused(outcome.get("msg", f"expression {outcome['expression_id']} is {outcome['status']}"))


def _item(item) -> dict:
    if isinstance(item, str):
        return {"expression": item}
    if isinstance(item, dict):
        return item
    expression, variables = item
    return {"expression": expression, "variables": variables or {}}


def _json(data: bytes, status: int) -> dict:
    try:
        body = json.loads(data)
    except ValueError:
        return {"msg": f"HTTP {status}"}
    return body if isinstance(body, dict) else {"msg": f"HTTP {status}"}
