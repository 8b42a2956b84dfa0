"""The differential oracle: every generated expression gives exactly the value
its tree means (ints exact, floats equal), or the same kind of calculation
error. See tests/oracle.py. ORACLE_EXAMPLES sets the count (make oracle: 100,000)."""

from __future__ import annotations

import math
import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, seed, settings

from core.expression import CalculationError, check_variables, compile_expression
from tests.oracle import MESSAGES, Refused, cases, expected, same_value

EXAMPLES = int(os.environ.get("ORACLE_EXAMPLES", "1200"))   # per test; two tests
TIMEOUT = max(600, EXAMPLES // 20)
ORACLE = settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def service_value(text: str, variables: dict):
    compiled = compile_expression(text, 10_000)
    return compiled.evaluate(check_variables(compiled, variables, 100))


def check_case(case) -> None:
    text, variables, tree = case
    try:
        want = expected(tree, variables)
    except Refused as refusal:
        with pytest.raises(CalculationError) as failed:
            service_value(text, variables)
        assert any(words in str(failed.value) for words in MESSAGES[refusal.kind]), \
            f"{text!r} {variables}: expected a {refusal.kind} error, got {failed.value}"
        return
    got = service_value(text, variables)
    assert same_value(got, want), f"{text!r} with {variables}: service {got!r}, tree {want!r}"


@pytest.mark.timeout(TIMEOUT)
@seed(20261128)
@ORACLE
@given(cases())
def test_every_expression_means_its_tree_fixed_seed(case):
    check_case(case)


@pytest.mark.timeout(TIMEOUT)
@ORACLE
@given(cases())
def test_every_expression_means_its_tree_fresh_seed(case):
    check_case(case)


# The tester's cases, and their like, each with the value Python gives
# (written as Python arithmetic, not evaluated text), -0.0 with its sign.
# Variables come as the API decodes them (Decimals) or as Python floats.
@pytest.mark.parametrize("text, variables, want", [
    ("-0.0", {}, -0.0),
    ("-0.0*x", {"x": Decimal("2.5")}, -0.0 * 2.5),
    ("+0*-+0.0", {}, 0 * -(+0.0)),
    ("x", {"x": Decimal("-0.0")}, -0.0),
    ("x", {"x": -0.0}, -0.0),
    ("x", {"x": Decimal("-0e-3")}, -0.0),
    ("x*1", {"x": Decimal("-0.00")}, -0.0 * 1),
    ("atan2(0, x)", {"x": Decimal("-0.0")}, math.atan2(0, -0.0)),
    ("atan2(x, -1)", {"x": Decimal("-0.0")}, math.atan2(-0.0, -1)),
    ("0.0*-1", {}, 0.0 * -1),
    ("-x", {"x": Decimal("0.0")}, -0.0),
    ("x", {"x": Decimal("0.0")}, 0.0),
    ("x", {"x": Decimal("-0")}, 0),      # an integer zero has no sign
    ("-0", {}, 0),
])
def test_negative_zero_keeps_its_sign(text, variables, want):
    got = service_value(text, variables)
    assert same_value(got, want), f"{text!r} with {variables}: service {got!r}, Python {want!r}"
