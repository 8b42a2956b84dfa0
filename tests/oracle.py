"""The differential oracle: random expression trees, their text, their value.

A generated tree is rendered to text with the fewest parentheses Python's
grammar needs (and random spacing, ^ or ** at random), so the text itself
exercises precedence, associativity, signs and chains. The expected value is
computed from the tree, with Python's operators, never by parsing the text:
if the service's parser groups anything differently, the numbers differ.

The semantics are docs/grammar.md's: Python's for the same text with ^ read as
**, comparisons chaining as in Python, `if` evaluating only the branch it
takes, and the grammar's functions. Nothing here imports core/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hypothesis import assume, strategies as st

# --- trees -------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    value: Any        # a non-negative int or float, or "PI"/"E"
    text: str


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Neg:
    sign: str
    operand: Any


@dataclass(frozen=True)
class Bin:
    op: str           # + - * / % ^ **
    left: Any
    right: Any


@dataclass(frozen=True)
class Cmp:
    ops: tuple
    operands: tuple


@dataclass(frozen=True)
class Fn:
    name: str
    args: tuple


NAMES = ["x", "y", "z", "t", "a1", "long_name_2"]
UNARY = ["sin", "cos", "tan", "asin", "acos", "atan", "sind", "cosd", "tand", "asind",
         "acosd", "atand", "sqrt", "abs", "ceil", "floor", "round", "exp", "fac"]
MULTI = {"log": (1, 2), "min": (1, 4), "max": (1, 4), "pow": (2, 2), "atan2": (2, 2),
         "pyt": (2, 2), "if": (3, 3)}
COMPARISONS = ["==", "!=", "<", ">", "<=", ">="]


def _int_literal(n: int) -> Lit:
    return Lit(n, str(n))


def _float_literal(x: float) -> Lit:
    return Lit(x, repr(x))


literals = st.one_of(
    st.integers(0, 20).map(_int_literal),
    st.integers(0, 10**6).map(_int_literal),
    st.integers(0, 10**30).map(_int_literal),
    st.integers(0, 2**40).map(lambda n: Lit(n, hex(n))),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(_float_literal),
    st.floats(0, 1e300, allow_nan=False, allow_infinity=False).map(_float_literal),
    st.sampled_from([Lit(0.5, ".5"), Lit(2.5e3, "2.5e3"), Lit(1e-3, "1e-3"), Lit(2.0, "2.")]),
    st.sampled_from([Lit("PI", "PI"), Lit("E", "E")]),
)
leaves = st.one_of(literals, literals, st.sampled_from(NAMES).map(Var))


def _extend(children):
    return st.one_of(
        st.builds(Neg, st.sampled_from(["-", "-", "+"]), children),
        st.builds(Bin, st.sampled_from(["+", "-", "*", "/", "//", "%", "^", "**"]), children, children),
        st.builds(Bin, st.sampled_from(["+", "-", "*", "/", "%", "^"]), children, children),
        st.integers(2, 4).flatmap(lambda n: st.builds(
            Cmp, st.lists(st.sampled_from(COMPARISONS), min_size=n - 1, max_size=n - 1).map(tuple),
            st.lists(children, min_size=n, max_size=n).map(tuple))),
        st.builds(Fn, st.sampled_from(UNARY), children.map(lambda c: (c,))),
        st.sampled_from(sorted(MULTI)).flatmap(lambda name: st.builds(
            Fn, st.just(name), st.lists(children, min_size=MULTI[name][0],
                                        max_size=MULTI[name][1]).map(tuple))),
    )


trees = st.recursive(leaves, _extend, max_leaves=12)

variable_values = st.one_of(
    st.integers(-20, 20), st.integers(-10**12, 10**12),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0]),   # both zeros, often: their signs must stay apart
)


def names_in(tree) -> set[str]:
    found, work = set(), [tree]
    while work:
        node = work.pop()
        if isinstance(node, Var):
            found.add(node.name)
        elif isinstance(node, Neg):
            work.append(node.operand)
        elif isinstance(node, Bin):
            work += [node.left, node.right]
        elif isinstance(node, Cmp):
            work += list(node.operands)
        elif isinstance(node, Fn):
            work += list(node.args)
    return found


@st.composite
def cases(draw):
    """(text, variables, tree) with every variable of the tree given a value."""
    tree = draw(trees)
    variables = {name: draw(variable_values) for name in sorted(names_in(tree))}
    return render(tree, draw), variables, tree


# --- rendering with the fewest parentheses -----------------------------------

COMPARE, SUM, PRODUCT, UNARY_LEVEL, POWER, ATOM = range(1, 7)
_LEVEL = {"+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT, "//": PRODUCT, "%": PRODUCT,
          "^": POWER, "**": POWER}


def level(node) -> int:
    if isinstance(node, Bin):
        return _LEVEL[node.op]
    if isinstance(node, Neg):
        return UNARY_LEVEL
    if isinstance(node, Cmp):
        return COMPARE
    return ATOM


def render(tree, draw) -> str:
    space = lambda: draw(st.sampled_from(["", "", " ", "  "]))  # noqa: E731

    def go(node) -> str:
        if isinstance(node, Lit):
            return node.text
        if isinstance(node, Var):
            return node.name
        if isinstance(node, Neg):
            return node.sign + space() + wrap(node.operand, level(node.operand) < UNARY_LEVEL)
        if isinstance(node, Bin):
            mine = _LEVEL[node.op]
            if mine == POWER:   # right to left; a signed right operand needs no parentheses
                left = wrap(node.left, level(node.left) <= POWER)
                right = wrap(node.right, level(node.right) < UNARY_LEVEL)
            else:
                left = wrap(node.left, level(node.left) < mine)
                right = wrap(node.right, level(node.right) <= mine)
            return left + space() + node.op + space() + right
        if isinstance(node, Cmp):
            parts = [wrap(node.operands[0], level(node.operands[0]) <= COMPARE)]
            for op, operand in zip(node.ops, node.operands[1:]):
                parts += [space(), op, space(), wrap(operand, level(operand) <= COMPARE)]
            return "".join(parts)
        if isinstance(node, Fn):
            return node.name + "(" + ("," + space()).join(go(a) for a in node.args) + ")"
        raise TypeError(node)

    def wrap(node, needed: bool) -> str:
        return "(" + space() + go(node) + space() + ")" if needed else go(node)

    return space() + go(tree) + space()


# --- the expected value --------------------------------------------------------

class Refused(Exception):
    """The expression has no finite value: `kind` says which error is expected."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


TOO_LARGE = 10 ** 4300   # a result has at most 4,300 digits


def _checked_power(a, b):
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        assume(b < 50_000 and b * math.log2(abs(a)) < 50_000)     # a runaway: not the oracle's business
    try:
        value = a ** b
    except OverflowError:
        raise Refused("overflow") from None
    except ZeroDivisionError:
        raise Refused("division by zero") from None
    if isinstance(value, complex):
        raise Refused("domain")
    return value


def _in_degrees(function, exact, step):
    """The grammar's sind/cosd/tand: exact at whole multiples of step degrees."""
    def value(a):
        if (isinstance(a, int) or (isinstance(a, float) and a.is_integer())) and int(a) % step == 0:
            result = exact[(int(a) // step) % len(exact)]
            if result is None:
                raise ValueError("tan of an odd multiple of 90 degrees")
            return result
        return function(math.radians(a))
    return value


def _fac(a):
    if isinstance(a, float):
        if not a.is_integer():
            raise Refused("domain")
        a = int(a)
    if a < 0:
        raise Refused("domain")
    assume(a <= 3000)
    return math.factorial(a)


_FUNCTIONS = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "sqrt": math.sqrt, "abs": abs, "ceil": math.ceil, "floor": math.floor,
    "round": round, "exp": math.exp, "fac": _fac,
    "sind": _in_degrees(math.sin, [0.0, 1.0, 0.0, -1.0], 90),
    "cosd": _in_degrees(math.cos, [1.0, 0.0, -1.0, 0.0], 90),
    "tand": _in_degrees(math.tan, [0.0, 1.0, None, -1.0], 45),
    "asind": lambda a: math.degrees(math.asin(a)),
    "acosd": lambda a: math.degrees(math.acos(a)), "atand": lambda a: math.degrees(math.atan(a)),
    "log": math.log, "min": lambda *a: min(a), "max": lambda *a: max(a), "pow": _checked_power,
    "atan2": math.atan2, "pyt": math.hypot,
}
_COMPARE = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def expected(tree, variables: dict[str, Any]) -> Any:
    """The tree's value with Python's operators, or Refused(kind)."""
    try:
        value = _value(tree, variables)
    except Refused:
        raise
    except ZeroDivisionError:
        raise Refused("division by zero") from None
    except OverflowError:
        raise Refused("overflow") from None
    except ValueError:
        raise Refused("domain") from None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= TOO_LARGE:
        raise Refused("result too large")
    if isinstance(value, float) and math.isnan(value):
        raise Refused("NaN")
    if isinstance(value, float) and math.isinf(value):
        raise Refused("overflow")
    return value


def _value(node, variables):
    if isinstance(node, Lit):
        return {"PI": math.pi, "E": math.e}.get(node.value, node.value) \
            if isinstance(node.value, str) else node.value
    if isinstance(node, Var):
        return variables[node.name]
    if isinstance(node, Neg):
        operand = _value(node.operand, variables)
        return -operand if node.sign == "-" else +operand
    if isinstance(node, Bin):
        a, b = _value(node.left, variables), _value(node.right, variables)
        for operand in (a, b):
            if isinstance(operand, int):
                assume(operand.bit_length() < 200_000)
        if node.op in ("^", "**"):
            return _checked_power(a, b)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            return a / b
        if node.op == "//":
            return a // b
        return a % b
    if isinstance(node, Cmp):   # Python's chain: stops at the first false link
        left = _value(node.operands[0], variables)
        for op, operand in zip(node.ops, node.operands[1:]):
            right = _value(operand, variables)
            if not _COMPARE[op](left, right):
                return False
            left = right
        return True
    if isinstance(node, Fn):
        if node.name == "if":   # only the branch taken is evaluated
            condition = _value(node.args[0], variables)
            return _value(node.args[1] if condition else node.args[2], variables)
        args = [_value(a, variables) for a in node.args]
        return _FUNCTIONS[node.name](*args)
    raise TypeError(node)


def same_value(got, want) -> bool:
    """The same number: the same type, equal (NaN to NaN), and a float zero
    with the same sign (math.copysign), as Python keeps -0.0 apart from 0.0."""
    if type(got) is not type(want):
        return False
    if isinstance(want, float):
        if math.isnan(want):
            return math.isnan(got)
        return got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
    return got == want


# How the service words each kind of refusal.
MESSAGES = {
    "division by zero": ("division by zero",),
    "overflow": ("overflow",),
    "domain": ("domain error",),
    "NaN": ("not a number (NaN)",),
    "result too large": ("result too large",),
}
