"""What every operator and function of the grammar means.

The reference is Python's own semantics for the same text, with ^ read as **:
results are Python numbers (exact integers, floats, booleans). Each entry
turns Python's exceptions into a message a person understands
(CalculationError). The precedence of the operators lives in core/parsing.py,
their checking in core/syntax_tree.py; this file says only what they compute.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

from core.errors import CalculationError


def _domain_checked(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def checked(*args):
        try:
            return function(*args)
        except ValueError:
            raise CalculationError(f"math domain error in {name}") from None
        except OverflowError:
            raise CalculationError(f"overflow in {name}") from None
    checked.__name__ = name
    return checked


def _divide(a, b):
    if b == 0:
        raise CalculationError("division by zero")
    try:
        return a / b
    except OverflowError:  # an integer too large for a float divided by another
        raise CalculationError("overflow in division: the quotient is too large for a float") from None


def _floor_divide(a, b):
    # Python's //: the floor of the quotient (-7 // 2 == -4); a float if either is one.
    if b == 0:
        raise CalculationError("division by zero (floor division)")
    try:
        return a // b
    except OverflowError:
        raise CalculationError("overflow in floor division") from None


def _modulo(a, b):
    # Python's floor modulo: the result has the sign of the divisor (-7 % 3 == 2).
    if b == 0:
        raise CalculationError("division by zero (modulo)")
    try:
        return a % b
    except OverflowError:
        raise CalculationError("overflow in modulo") from None


def _power(a, b):
    # Python's ** (and pow): exact for integers, 0 ** -1 a division by zero,
    # 0.0 ** -inf infinite as in Python.
    try:
        value = a ** b
    except ZeroDivisionError:
        raise CalculationError("division by zero (0 raised to a negative power)") from None
    except OverflowError:
        raise CalculationError("overflow in power") from None
    if isinstance(value, complex):
        raise CalculationError("math domain error in power (the result would be complex)")
    return value


def _factorial(a):
    if isinstance(a, float):
        if not a.is_integer():
            raise CalculationError("math domain error in fac (needs a whole number)")
        a = int(a)
    if a < 0:
        raise CalculationError("math domain error in fac (needs a number >= 0)")
    return math.factorial(a)


def _log(*args):
    return math.log(*args)


def _degrees_exact(function: Callable[[float], float], exact: dict[int, float], step: int):
    """sind/cosd/tand: exact at multiples of `step` degrees (sind(180) is 0,
    not 1.2e-16), math.sin(math.radians(a)) and so on elsewhere."""
    def in_degrees(a):
        whole = isinstance(a, int) or (isinstance(a, float) and a.is_integer())
        if whole and int(a) % step == 0:
            value = exact[int(a) % 360]
            if value is None:
                raise ValueError("infinite")
            return value
        return function(math.radians(a))
    return in_degrees


# Unary signs. Python's rule: they bind tighter than * / % and looser than ^.
SIGNS: dict[str, Callable[[Any], Any]] = {"-": operator.neg, "+": operator.pos}

# Functions of one argument: name -> function.
UNARY_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    name: _domain_checked(name, function)
    for name, function in {
        "sin": math.sin, "cos": math.cos, "tan": math.tan,
        "asin": math.asin, "acos": math.acos, "atan": math.atan,
        "sind": _degrees_exact(math.sin, {0: 0.0, 90: 1.0, 180: 0.0, 270: -1.0}, 90),
        "cosd": _degrees_exact(math.cos, {0: 1.0, 90: 0.0, 180: -1.0, 270: 0.0}, 90),
        "tand": _degrees_exact(math.tan, {0: 0.0, 45: 1.0, 90: None, 135: -1.0, 180: 0.0,
                                          225: 1.0, 270: None, 315: -1.0}, 45),
        "asind": lambda a: math.degrees(math.asin(a)),
        "acosd": lambda a: math.degrees(math.acos(a)),
        "atand": lambda a: math.degrees(math.atan(a)),
        "sqrt": math.sqrt, "abs": abs, "ceil": math.ceil, "floor": math.floor,
        "round": round, "exp": math.exp,
    }.items()
}

ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
    "//": _floor_divide,
    "%": _modulo,
    "^": _power,
    "**": _power,
}

# Comparisons chain as in Python: 3 > 2 > 1 is (3 > 2) and (2 > 1).
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
}

BINARY_OPERATORS = {**ARITHMETIC, **COMPARISONS}

# Functions called with parentheses: name -> (function, least and most arguments).
# if(c, a, b) is not here: it evaluates only the branch it takes (core/program.py).
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "fac": (_factorial, 1, 1),
    "log": (_domain_checked("log", _log), 1, 2),
    "min": (lambda *a: min(a), 1, 1000),
    "max": (lambda *a: max(a), 1, 1000),
    "pow": (_power, 2, 2),          # Python's pow(a, b), the same as a ** b
    "atan2": (_domain_checked("atan2", math.atan2), 2, 2),
    "pyt": (_domain_checked("pyt", math.hypot), 2, 2),
}
IF = "if"
CALLABLE_NAMES = frozenset(FUNCTIONS) | {IF}
