"""A sample of the oracle's cases end to end: through HTTP (the API, a real
server) and through a psql INSERT, calculated by a real Calculator; both
paths must give the tree's value, and the same outcome as each other."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.errors import UnsatisfiedAssumption

from core.numbers import number_to_json
from tests.http_client import request
from tests.oracle import MESSAGES, Refused, cases, expected, same_value
from tests.support import wait_done

SAMPLE = 80
# Added to every sample: -0.0 in and out, each with Python's value (written
# as Python arithmetic); its sign must survive both paths.
SIGNED_ZEROS = [
    ("-0.0", {}, -0.0),
    ("-0.0*x", {"x": 2.5}, -0.0 * 2.5),
    ("+0*-+0.0", {}, 0 * -(+0.0)),
    ("x", {"x": -0.0}, -0.0),
    ("atan2(0, x)", {"x": -0.0}, math.atan2(0, -0.0)),
]


def _variables_json(variables: dict) -> str:
    return "{" + ",".join(f'"{name}":{number_to_json(value)}' for name, value in variables.items()) + "}"


def _want(case):
    text, variables, tree = case
    try:
        return ("done", expected(tree, variables))
    except Refused as refusal:
        return ("error", refusal.kind)
    except UnsatisfiedAssumption:   # a runaway the oracle does not compute
        return None


def _matches(outcome, want) -> bool:
    status, result, error = outcome
    if want[0] == "error":
        return status == "error" and any(words in error for words in MESSAGES[want[1]])
    return status == "done" and same_value(result, want[1])


@pytest.mark.timeout(120)
@settings(max_examples=1, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(sample=st.lists(cases(), min_size=SAMPLE, max_size=SAMPLE))
def test_the_api_and_psql_agree_with_the_oracle(sample, db, calculators, http_server):
    wanted = [(case, _want(case)) for case in sample]
    wanted = [(case, want) for case, want in wanted if want is not None]
    wanted += [((text, variables, None), ("done", value)) for text, variables, value in SIGNED_ZEROS]
    items = [{"expression": text, "variables": {}} for (text, _, _), _ in wanted]
    # The body is written by hand so that floats stay floats (see core/numbers.py).
    body = '{"items": [' + ",".join(
        '{"expression": %s, "variables": %s}' % (_json_string(text), _variables_json(variables))
        for (text, variables, _), _ in wanted) + "]}"
    status, _, answer = request(http_server, "POST", "/api/expressions", body,
                                {"Content-Type": "application/json"})
    assert status == 202, answer
    http_ids = answer["expression_ids"]
    # As a psql user would write a -0.0 variable: its name in variables_negative_zero (docs/psql.md).
    psql_ids = [db.execute("INSERT INTO tasks (expression, variables, variables_negative_zero) "
                           "VALUES (%(text)s, %(json)s::text::jsonb, negative_zero_names(%(json)s::text::json)) "
                           "RETURNING id",
                           {"text": text, "json": _variables_json(variables)}).fetchone()[0]
                for (text, variables, _), _ in wanted]
    calculators()
    outcomes = wait_done(db, http_ids + psql_ids, timeout=60)
    status, _, read = request(http_server, "GET", "/api/results?ids=" + ",".join(map(str, http_ids)))
    assert status == 200
    through_api = {r["expression_id"]: r for r in read["results"]}
    wrong = []
    for ((text, variables, _), want), http_id, psql_id in zip(wanted, http_ids, psql_ids):
        for path, task_id in (("http", http_id), ("psql", psql_id)):
            if not _matches(outcomes[task_id], want):
                wrong.append(f"{path} {text!r} {variables}: {outcomes[task_id]} want {want}")
        api = through_api[http_id]
        assert api["status"] == outcomes[http_id][0]
        assert api.get("result", api.get("msg")) == (outcomes[http_id][1] if api["status"] == "done"
                                                     else outcomes[http_id][2])
    assert not wrong, "\n".join(wrong[:20])
    assert len(items) >= SAMPLE // 2


def _json_string(text: str) -> str:
    import json
    return json.dumps(text)
