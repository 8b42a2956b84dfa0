"""The accepted grammar and its messages (no database needed)."""

from __future__ import annotations

import math
import operator

import pytest
from hypothesis import given, settings, strategies as st

from core.expression import (CalculationError, ExpressionError, RESERVED_NAMES, check_variables,
                             compile_expression, number_to_json, variables_to_json)

LIMIT = 10_000


def calc(text: str, **variables):
    compiled = compile_expression(text, LIMIT)
    check_variables(compiled, variables, 100)
    return compiled.evaluate(variables)


@pytest.mark.parametrize("text, variables, expected", [
    ("x*t**y", {"x": 10, "y": 1, "t": 11}, 110),
    ("2+2", {}, 4),
    ("2^10", {}, 1024),
    ("2**3**2", {}, 512),
    ("-2^2", {}, -4),
    ("7 % 3", {}, 1),
    ("7 / 2", {}, 3.5),
    ("(1 + 2) * 3", {}, 9),
    ("sqrt(16) + abs(-3)", {}, 7.0),
    ("floor(2.7) + ceil(2.1) + round(2.5)", {}, 7),
    ("exp(0) + log(E) + log(8, 2)", {}, 5.0),
    ("min(3, 1, 2) + max(3, 1, 2)", {}, 4),
    ("pow(2, 10)", {}, 1024.0),
    ("fac(20)", {}, 2432902008176640000),
    ("fac(5.0)", {}, 120),
    ("atan2(1, 1) * 4", {}, math.pi),
    ("pyt(3, 4)", {}, 5.0),
    ("sind(90) + cosd(0)", {}, 2.0),
    ("if(x > 1, 10, 20)", {"x": 2}, 10),
    ("1 < 2", {}, True),
    ("1 == 2", {}, False),
    ("PI", {}, math.pi),
    ("2 ** 100", {}, 2**100),
    ("2.5e3 + 1", {}, 2501.0),
    ("x_1 + y2", {"x_1": 1, "y2": 2}, 3),
    ("e0 + E5 + 1e1", {"e0": 1, "E5": 2}, 13.0),
    ("2^3^2 + 2**3**2", {}, 1024),
    ("-2**2", {}, -4),
    ("(2^3)^2", {}, 64),
    ("1 /* a comment */ + 1", {}, 2),
    ("((((((1))))))", {}, 1),
])
def test_accepted_grammar(text, variables, expected):
    result = calc(text, **variables)
    assert result == pytest.approx(expected) if isinstance(expected, float) else result == expected
    assert type(result) is type(expected)


def test_deep_nesting_parses_without_recursion():
    depth = 10_000
    compiled = compile_expression("(" * depth + "1" + ")" * depth, 3 * depth)
    assert compiled.evaluate({}) == 1


@pytest.mark.parametrize("text, message", [
    ("", "expression is empty"),
    ("   ", "expression is empty"),
    ("2 +", "incomplete expression"),
    ("(1", 'unmatched "()"'),
    ("1)", 'unmatched "()"'),
    ("5(3)", 'parse error near column 3: unexpected "("'),
    ("'abc'", "parse error near column 1: unknown character"),
    ("_y", "unknown character"),
    ('"abc"', "is not a valid variable name"),
    ("x || y", "operator '||' is not supported"),
    ("1 and 2", "operator 'and' is not supported"),
    ("x in y", "operator 'in' is not supported"),
    ("not 1", "operator 'not' is not supported"),
    ("random(1)", "function 'random' is not supported"),
    ("concat(1, 2)", "function 'concat' is not supported"),
    ("2 D 6", "unexpected function"),
    ("1, 2", "commas may only separate the arguments of a function"),
    ("(1, 2) * 3", "takes one value, not a list"),
    ("log", "log is a function: call it like log(...)"),
    ("fac + 1", "fac is a function"),
    ("log()", "log takes 1 to 2 arguments, not 0"),
    ("pow(1, 2, 3)", "pow takes 2 arguments, not 3"),
    ("x(3)", "only functions can be called"),
    ("a.b", "'a.b' is not a valid variable name"),
    ("π", "'π' is not a valid variable name"),
    ("1e999", "a number in the expression is too large"),
    ("2*-1", "needs parentheses, as in 2*(-1)"),
    ("1 /* unterminated", "malformed expression"),
    ("1\x00", "unknown character"),
])
def test_refused_expressions_say_why(text, message):
    with pytest.raises(ExpressionError) as refused:
        compile_expression(text, LIMIT)
    assert message in str(refused.value)


def test_long_digit_runs_are_refused_before_the_quadratic_scanner_sees_them():
    compile_expression("1" * 300 + ".5", LIMIT)
    with pytest.raises(ExpressionError, match="too long \\(more than 1000 digits\\)"):
        compile_expression("1" * 9999, LIMIT)


def test_expression_length_is_capped():
    compile_expression("1" * 50, 50)
    with pytest.raises(ExpressionError, match="expression is too long: 51 characters, the limit is 50"):
        compile_expression("1" * 51, 50)


@pytest.mark.parametrize("value, message", [
    (None, "'expression' must be a string, not null"),
    (12, "'expression' must be a string, not a number"),
    (["1"], "'expression' must be a string, not an array"),
])
def test_expression_must_be_a_string(value, message):
    with pytest.raises(ExpressionError, match=message):
        compile_expression(value, LIMIT)


@pytest.mark.parametrize("text, variables, message", [
    ("x + y", {"x": 1}, "missing values for y"),
    ("x", {"x": 1, "z": 2}, "unused variables z"),
    ("x", {"x": True}, "variable 'x' must be a number, not a boolean"),
    ("x", {"x": "1"}, "variable 'x' must be a number, not a string"),
    ("x", {"x": None}, "variable 'x' must be a number, not null"),
    ("x", {"x": [1]}, "variable 'x' must be a number, not an array"),
    ("x", {"x": {}}, "variable 'x' must be a number, not an object"),
    ("x", {"x": float("nan")}, "variable 'x' must be a finite number"),
    ("x", {"x": float("inf")}, "variable 'x' must be a finite number"),
    ("1", {"sin": 1}, "'sin' is a reserved name"),
    ("1", {"PI": 1}, "'PI' is a reserved name"),
    ("1", {"E": 1}, "'E' is a reserved name"),
    ("1", {"fac": 1}, "'fac' is a reserved name"),
    ("1", {"x y": 1}, "'x y' is not a valid variable name"),
    ("1", {"'; DROP TABLE tasks; --": 1}, "is not a valid variable name"),
])
def test_refused_variables_say_why(text, variables, message):
    compiled = compile_expression(text, LIMIT)
    with pytest.raises(ExpressionError, match=message):
        check_variables(compiled, variables, 100)


def test_variables_must_be_an_object_and_are_capped():
    compiled = compile_expression("1", LIMIT)
    with pytest.raises(ExpressionError, match="'variables' must be an object, not an array"):
        check_variables(compiled, [1], 100)
    names = {f"v{i}": 1 for i in range(3)}
    with pytest.raises(ExpressionError, match="too many variables: 3, the limit is 2"):
        check_variables(compile_expression("v0+v1+v2", LIMIT), names, 2)


def test_constants_and_functions_cannot_be_shadowed():
    """PI and E are always the constants, sin is always the function."""
    assert compile_expression("PI + E", LIMIT).variables == frozenset()
    assert {"sin", "PI", "E", "log", "fac", "and", "D"} <= RESERVED_NAMES


@pytest.mark.parametrize("text, message", [
    ("1/0", "division by zero"),
    ("5 % 0", "division by zero (modulo)"),
    ("0 ** (-1)", "division by zero (0 raised to a negative power)"),
    ("sqrt(-1)", "math domain error in sqrt"),
    ("log(0)", "math domain error in log"),
    ("acos(2)", "math domain error in acos"),
    ("(-8) ** (1/3)", "the result would be complex"),
    ("fac(-1)", "math domain error in fac"),
    ("fac(2.5)", "math domain error in fac (needs a whole number)"),
    ("exp(1000)", "overflow in exp"),
    ("10.0 ** 400", "overflow in power"),
    ("1e308 * 10", "overflow: the result is infinite"),
    ("1e308 * 10 - 1e308 * 10", "the result is not a number (NaN)"),
    ("10 ** 400 * 1.5", "overflow: the result is too large"),
    ("round(1e308 * 10)", "overflow in round"),
    ("2 ** 20000", "result too large: more than 4300 digits"),
])
def test_calculation_errors_say_why(text, message):
    with pytest.raises(CalculationError) as failed:
        calc(text)
    assert message in str(failed.value)


def test_results_keep_their_kind_in_json():
    assert number_to_json(110) == "110"
    assert number_to_json(2.0) == "2.0"
    assert number_to_json(True) == "true"
    assert number_to_json(10**30) == str(10**30)
    # jsonb would turn 1e+300 into an integer: we write floats positionally.
    assert float(number_to_json(1e300)) == 1e300 and "." in number_to_json(1e300)
    assert float(number_to_json(1e-300)) == 1e-300
    assert variables_to_json({"x": 1e20, "y": 3}) == '{"x":100000000000000000000.0,"y":3}'


# A property: random arithmetic trees evaluate to what the tree means.
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_leaf = st.integers(min_value=0, max_value=1000).map(lambda n: (str(n), n))


def _combine(children):
    def build(pair_op):
        (left, right), op = pair_op
        return (f"({left[0]}){op}({right[0]})", _OPS[op](left[1], right[1]))
    return st.tuples(st.tuples(children, children), st.sampled_from(sorted(_OPS))).map(build)


@settings(max_examples=200, deadline=None)
@given(st.recursive(_leaf, _combine, max_leaves=30))
def test_integer_arithmetic_matches_its_tree(tree):
    text, expected = tree
    assert calc(text) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("*^%/+-|=!<>inotadxr \u2219\u20221(")), min_size=1, max_size=8))
def test_the_fast_operator_scan_answers_as_the_library_does(text):
    from py_expression_eval import Parser
    from core.expression import _Parser
    ours, theirs = _Parser(), Parser()
    for parser in (ours, theirs):
        parser.expression, parser.pos, parser.tokenprio, parser.tokenindex = text, 0, None, None
    assert ours.isOperator() == theirs.isOperator()
    assert (ours.pos, ours.tokenprio, ours.tokenindex) == (theirs.pos, theirs.tokenprio, theirs.tokenindex)
