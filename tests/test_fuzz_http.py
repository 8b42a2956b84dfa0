"""Property-based fuzzing of the real HTTP server.

Invariants, whatever is sent: never a 5xx (the database is up), always a JSON
object with a non-empty "msg" for a 4xx, never HTML or a stack trace; and a
valid submission is always accepted.
"""

from __future__ import annotations

import json
import os
import math

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.http_client import request

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)

expression_like = st.text(alphabet=st.sampled_from(list("0123456789.+-*/%^()xyzE, sincofalgqrtpPI'\"|&!<>=\x00é∑ \t")),
                          max_size=60)


def check_answer(status: int, headers: dict, body, *, accepted_ok: bool = True) -> None:
    assert status < 500, (status, body)
    assert headers.get("Content-Type") == "application/json", (status, headers, body)
    assert isinstance(body, dict), body
    if status >= 400:
        assert isinstance(body.get("msg"), str) and body["msg"], body
        assert "Traceback" not in body["msg"] and "<html" not in body["msg"].lower()
    elif status == 202 and "expression_id" in body:
        assert accepted_ok, body


def post(base, body: bytes, content_type="application/json"):
    return request(base, "POST", "/api/expression", body, {"Content-Type": content_type})


@FUZZ
@given(payload=json_values)
def test_arbitrary_json_values(http_server, payload):
    check_answer(*post(http_server, json.dumps(payload).encode()))


@FUZZ
@given(expression=expression_like, variables=st.dictionaries(
    st.text(max_size=8), st.integers() | st.floats() | st.booleans() | st.none() | st.text(max_size=5),
    max_size=4))
def test_arbitrary_expressions_and_variables(http_server, expression, variables):
    body = json.dumps({"expression": expression, "variables": variables}, allow_nan=True).encode()
    check_answer(*post(http_server, body))


@FUZZ
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(
    ["application/json", "text/plain", "", "application/json; charset=latin-1", "multipart/form-data"]))
def test_arbitrary_bytes_and_content_types(http_server, raw, content_type):
    check_answer(*post(http_server, raw, content_type))


@FUZZ
@given(text=st.text(max_size=40))
def test_arbitrary_result_ids(http_server, text):
    from urllib.parse import quote
    status, headers, body = request(http_server, "GET", "/api/result/" + quote(text, safe=""))
    check_answer(status, headers, body)
    assert status in (200, 202, 400, 404, 405)


@FUZZ
@given(text=st.text(max_size=40))
def test_arbitrary_ids_to_cancel(http_server, text):
    from urllib.parse import quote
    status, headers, body = request(http_server, "POST", "/api/result/" + quote(text, safe="") + "/cancel")
    check_answer(status, headers, body)
    assert status in (200, 400, 404, 405, 409, 410)


@FUZZ
@given(payload=json_values | st.fixed_dictionaries({"ids": st.lists(st.integers() | json_values, max_size=5)}))
def test_arbitrary_bulk_cancels(http_server, payload):
    status, headers, body = request(http_server, "POST", "/api/results/cancel", json.dumps(payload).encode(),
                                    {"Content-Type": "application/json"})
    check_answer(status, headers, body)
    assert status in (200, 400)


@FUZZ
@given(st.recursive(st.integers(0, 10**6).map(str),
                    lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "^", "%"]), inner)
                    .map(lambda t: f"({t[0]}){t[1]}({t[2]})"), max_leaves=12),
       st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
           lambda n: n not in {"sin", "cos", "tan", "log", "min", "max", "pow", "fac", "exp", "abs",
                               "if", "and", "or", "xor", "in", "not", "sqrt", "ceil", "round", "pyt",
                               "asin", "acos", "atan", "sind", "cosd", "tand", "asind", "acosd", "atand",
                               "floor", "atan2", "random", "concat"}),
           st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False), max_size=3))
def test_valid_submissions_are_always_accepted(http_server, expression, variables):
    if variables:
        expression = "(" + expression + ")+" + "+".join(variables)
    status, headers, body = post(http_server, json.dumps({"expression": expression, "variables": variables}).encode())
    assert status == 202, (expression, variables, body)
    assert isinstance(body["expression_id"], int)


def test_hostile_shapes(http_server):
    for body in [
        b'{"expression": "1", "variables": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"expression": "' + b"1" * 9_000 + b'"}',
        b'{"expression": "1", "variables": {"x": ' + b"9" * 100_000 + b"}}",
        b'{"expression": "x", "variables": {"x": NaN}}',
        b'{"expression": "\\u0000"}',
        b'{"expression": "1", "variables": {"\\u0000": 1}}',
        b'{"expression": "' + "é∑".encode() * 3000 + b'"}',
        b"\xef\xbb\xbf{}",
        b"{" * 100_000,
        b"x" * 2_000_000,
    ]:
        status, headers, payload = post(http_server, body)
        check_answer(status, headers, payload, accepted_ok=False)
        assert 400 <= status < 500


def test_a_huge_body_is_cut_off_with_413(http_server):
    status, headers, body = post(http_server, b'{"expression": "' + b"1+" * 600_000 + b'1"}')
    assert status == 413 and body["msg"].startswith("request body too large")


def test_floats_round_trip_exactly(http_server):
    for value in [0.1, 1e300, 5e-324, -2.5, 2**53 + 1, math.pi]:
        status, _, body = post(http_server, json.dumps({"expression": "x", "variables": {"x": value}}).encode())
        assert status == 202
