"""What a valid expression is, and how one is calculated.

This is the single definition of the accepted grammar, shared by the API
(which refuses bad input with a 400) and the Calculator (which turns the same
problems into error results for tasks inserted with psql).

py_expression_eval does the parsing and the evaluation; nothing here calls
eval or exec. The library accepts much more than arithmetic (strings, lists,
dice rolls, random numbers), so after parsing we walk the postfix token list
once, check every token against a whitelist and the arity of every call, and
then evaluate with our own operator tables, whose functions turn Python's
exceptions into messages a person understands.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from py_expression_eval import TFUNCALL, TNUMBER, TOP1, TOP2, TVAR, Token
from py_expression_eval import Expression as _LibraryExpression
from py_expression_eval import Parser as _LibraryParser

# Python refuses to print integers longer than this by default; a result that
# long is not useful to anyone and would only be a way to fill the database.
MAX_RESULT_DIGITS = 4300
_MAX_RESULT_BITS = int(MAX_RESULT_DIGITS / math.log10(2))

IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# The library's number scanner is quadratic in the length of a run of digits
# (a 10,000-digit literal costs the API most of a second), so long runs are
# refused before parsing. 1,000 digits is far beyond what a float can hold.
MAX_NUMBER_LENGTH = 1000
_LONG_NUMBER = re.compile(r"[0-9.]{%d,}" % (MAX_NUMBER_LENGTH + 1))
# The library's parser mangles "2*-1"; we refuse it and say how to write it.
_SIGN_AFTER_OPERATOR = re.compile(r"[-+*/%^<>=]\s*[-+]")


class ExpressionError(ValueError):
    """The expression or its variables are not acceptable (a 400 in the API)."""


class CalculationError(ArithmeticError):
    """The expression is valid but has no finite real value for these variables."""


# --- the operator tables used for evaluation ---------------------------------

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
    return a / b


def _modulo(a, b):
    if b == 0:
        raise CalculationError("division by zero (modulo)")
    return a % b


def _power(a, b):
    if a == 0 and b < 0:
        raise CalculationError("division by zero (0 raised to a negative power)")
    try:
        value = a ** b
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


def _if(condition, when_true, when_false):
    return when_true if condition else when_false


def _round(a):
    return round(a)


UNARY_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    name: _domain_checked(name, function)
    for name, function in {
        "sin": math.sin, "cos": math.cos, "tan": math.tan,
        "asin": math.asin, "acos": math.acos, "atan": math.atan,
        "sind": lambda a: math.sin(math.radians(a)),
        "cosd": lambda a: math.cos(math.radians(a)),
        "tand": lambda a: math.tan(math.radians(a)),
        "asind": lambda a: math.degrees(math.asin(a)),
        "acosd": lambda a: math.degrees(math.acos(a)),
        "atand": lambda a: math.degrees(math.atan(a)),
        "sqrt": math.sqrt, "abs": abs, "ceil": math.ceil, "floor": math.floor,
        "round": _round, "exp": math.exp,
    }.items()
}
UNARY_FUNCTIONS["-"] = lambda a: -a

BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "%": _modulo,
    "^": _power,
    "**": _power,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}

# The argument separator: the library builds a Python list from a, b, c.
_COMMA = ","


def _append_argument(a, b):
    return a + [b] if isinstance(a, list) else [a, b]


# name -> (function, smallest and largest number of arguments)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "fac": (_factorial, 1, 1),
    "log": (_domain_checked("log", math.log), 1, 2),
    "min": (lambda *a: min(a), 1, 1000),
    "max": (lambda *a: max(a), 1, 1000),
    "pow": (_domain_checked("pow", math.pow), 2, 2),
    "atan2": (_domain_checked("atan2", math.atan2), 2, 2),
    "pyt": (_domain_checked("pyt", math.hypot), 2, 2),
    "if": (_if, 3, 3),
}

CONSTANTS = {"E": math.e, "PI": math.pi}

_LIBRARY = _LibraryParser()
# Every word the library's tokenizer treats as something other than a
# variable; none of them can be used as a variable name.
RESERVED_NAMES = frozenset(
    [n for n in _LIBRARY.ops1 if IDENTIFIER.match(n)]
    + [n for n in _LIBRARY.ops2 if IDENTIFIER.match(n)]
    + list(_LIBRARY.functions) + list(_LIBRARY.consts) + list(FUNCTIONS)
)

_SAFE_OPS2 = dict(BINARY_OPERATORS, **{_COMMA: _append_argument})
_SAFE_FUNCTIONS = {name: spec[0] for name, spec in FUNCTIONS.items()}


# --- parsing and checking ----------------------------------------------------

# The library's operator table, as its isOperator scans it (order matters).
_OPERATORS = (
    ("**", 8, "**"), ("^", 8, "^"), ("%", 6, "%"), ("/", 6, "/"),
    ("\u2219", 5, "*"), ("\u2022", 5, "*"), ("*", 5, "*"), ("+", 4, "+"), ("-", 4, "-"),
    ("||", 3, "||"), ("==", 3, "=="), ("!=", 3, "!="), ("<=", 3, "<="), (">=", 3, ">="),
    ("<", 3, "<"), (">", 3, ">"), ("in ", 3, "in"), ("not ", 2, "not"), ("and ", 1, "and"),
    ("xor ", 0, "xor"), ("or ", 0, "or"),
)
_OPERATOR_FIRST_CHARACTERS = frozenset(token[0] for token, _, _ in _OPERATORS)


class _Parser(_LibraryParser):
    """The library's parser with its error messages made readable, string
    literals switched off, and two tokenizer fixes (see isNumber, addfunc).
    One instance per thread is reused: parse() resets all of its state."""

    def __init__(self):
        super().__init__(string_literal_quotes=())

    def isOperator(self):
        # Same answers as the library's, which tries all 21 operators with
        # startswith at every position; most positions start none of them.
        # This is a third of the parsing time saved.
        if self.expression[self.pos] not in _OPERATOR_FIRST_CHARACTERS:
            return False
        for token, priority, index in _OPERATORS:
            if self.expression.startswith(token, self.pos):
                self.tokenprio = priority
                self.tokenindex = index
                self.pos += len(token)
                return True
        return False

    def error_parsing(self, column, msg):
        if msg == "parity":  # the library's word for a missing operand
            msg = "incomplete expression (an operand or a function argument is missing)"
        # The library reports the position of, or just after, the offending token.
        raise ExpressionError(f"parse error near column {column + 1}: {msg}")

    def isNumber(self):
        # The library reads "e0" or "E5" as a number in scientific notation
        # with an empty mantissa; a number starts with a digit or a point,
        # so that e0 is a variable (found by the HTTP fuzzer).
        if self.expression[self.pos] in "eE":
            return False
        return super().isNumber()

    def addfunc(self, tokenstack, operstack, type_):
        """As the library's, except that ^ and ** group from the right:
        2^3^2 is 2^(3^2) = 512, as in mathematics and Python."""
        if type_ == TOP2 and self.tokenindex in ("^", "**"):
            operator = Token(type_, self.tokenindex, self.tokenprio + self.tmpprio, 0)
            while operstack and operator.prio_ < operstack[-1].prio_:
                tokenstack.append(operstack.pop())
            operstack.append(operator)
            return
        super().addfunc(tokenstack, operstack, type_)


_parsers = threading.local()


def _parser() -> _Parser:
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = _Parser()
    return parser


@dataclass(frozen=True)
class _Arguments:
    """Stack marker during checking: a comma-separated argument list."""
    count: int


_NUMBER = "number"


@dataclass(frozen=True)
class _Function:
    name: str


@dataclass(frozen=True)
class CompiledExpression:
    """A checked expression, ready to be evaluated many times."""

    text: str
    variables: frozenset[str]
    _program: _LibraryExpression

    def evaluate(self, values: dict[str, Any]) -> Any:
        """Evaluate with already checked values; raises CalculationError."""
        try:
            value = self._program.evaluate(values)
        except CalculationError:
            raise
        except ZeroDivisionError:
            raise CalculationError("division by zero") from None
        except OverflowError:
            raise CalculationError("overflow: the result is too large") from None
        except MemoryError:
            raise CalculationError("out of memory: the calculation needs too much memory") from None
        except (ValueError, TypeError, ArithmeticError) as error:
            raise CalculationError(f"calculation failed: {error}") from None
        return finite_result(value)


def compile_expression(text: Any, max_length: int) -> CompiledExpression:
    """Parse and check an expression; raises ExpressionError saying what is wrong."""
    if not isinstance(text, str):
        raise ExpressionError(f"'expression' must be a string, not {json_type(text)}")
    if len(text) > max_length:
        raise ExpressionError(
            f"expression is too long: {len(text)} characters, the limit is {max_length}")
    if not text.strip():
        raise ExpressionError("expression is empty")
    if _LONG_NUMBER.search(text):
        raise ExpressionError(
            f"a number in the expression is too long (more than {MAX_NUMBER_LENGTH} digits)")
    try:
        program = _parser().parse(text)
    except ExpressionError:
        raise
    except Exception:  # the library's tokenizer has a few unguarded corners
        raise ExpressionError("parse error: malformed expression") from None
    try:
        variables = _check_tokens(program.tokens)
    except ExpressionError as error:
        if _SIGN_AFTER_OPERATOR.search(text) and "malformed" in str(error):
            raise ExpressionError(
                f"{error}: a signed operand after an operator needs parentheses, "
                "as in 2*(-1)") from None
        raise
    safe = _LibraryExpression(program.tokens, UNARY_FUNCTIONS, _SAFE_OPS2, _SAFE_FUNCTIONS)
    return CompiledExpression(text, frozenset(variables), safe)


def _check_tokens(tokens) -> set[str]:
    """Simulate the evaluation stack with kinds instead of values."""
    stack: list[Any] = []
    variables: set[str] = set()

    def pop_number(context: str):
        if not stack:
            raise ExpressionError("parse error: malformed expression")
        kind = stack.pop()
        if isinstance(kind, _Function):
            raise ExpressionError(
                f"{kind.name} is a function: call it like {kind.name}(...)")
        if isinstance(kind, _Arguments):
            raise ExpressionError(f"{context} takes one value, not a list separated by commas")
        return kind

    for token in tokens:
        if token.type_ == TNUMBER:
            stack.append(_check_literal(token.number_))
        elif token.type_ == TVAR:
            stack.append(_check_name(token.index_, variables))
        elif token.type_ == TOP1:
            if token.index_ not in UNARY_FUNCTIONS:
                raise ExpressionError(f"operator '{token.index_}' is not supported")
            pop_number(token.index_)
            stack.append(_NUMBER)
        elif token.type_ == TOP2 and token.index_ == _COMMA:
            pop_number("a function argument")
            if not stack:
                raise ExpressionError("parse error: malformed expression")
            first = stack.pop()
            count = first.count + 1 if isinstance(first, _Arguments) else 2
            if isinstance(first, _Function):
                raise ExpressionError(f"{first.name} is a function: call it like {first.name}(...)")
            stack.append(_Arguments(count))
        elif token.type_ == TOP2:
            if token.index_ not in BINARY_OPERATORS:
                raise ExpressionError(f"operator '{token.index_}' is not supported")
            pop_number(f"operator '{token.index_}'")
            pop_number(f"operator '{token.index_}'")
            stack.append(_NUMBER)
        elif token.type_ == TFUNCALL:
            _check_call(stack)
        else:
            raise ExpressionError("parse error: malformed expression")
    if len(stack) != 1:
        raise ExpressionError("parse error: malformed expression")
    last = stack[0]
    if isinstance(last, _Function):
        raise ExpressionError(f"{last.name} is a function: call it like {last.name}(...)")
    if isinstance(last, _Arguments):
        raise ExpressionError("commas may only separate the arguments of a function")
    return variables


def _check_literal(value):
    if isinstance(value, list):  # the library's marker for an empty call "f()"
        return _Arguments(0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError("only numbers are allowed as literals")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError("a number in the expression is too large")
    return _NUMBER


def _check_name(name: str, variables: set[str]):
    if name in FUNCTIONS:
        return _Function(name)
    if name in RESERVED_NAMES:
        raise ExpressionError(f"function '{name}' is not supported")
    if not IDENTIFIER.match(name):
        raise ExpressionError(f"'{name}' is not a valid variable name")
    variables.add(name)
    return _NUMBER


def _check_call(stack: list[Any]) -> None:
    if len(stack) < 2:
        raise ExpressionError("parse error: malformed expression")
    arguments = stack.pop()
    function = stack.pop()
    if not isinstance(function, _Function):
        raise ExpressionError("only functions can be called: put an operator before '('")
    count = arguments.count if isinstance(arguments, _Arguments) else 1
    _, least, most = FUNCTIONS[function.name]
    if not least <= count <= most:
        wanted = str(least) if least == most else f"{least} to {most}"
        raise ExpressionError(f"{function.name} takes {wanted} arguments, not {count}")
    stack.append(_NUMBER)


# --- variables ---------------------------------------------------------------

def check_variables(compiled: CompiledExpression, variables: Any, max_count: int) -> dict:
    """Check that variables is an object of finite numbers naming exactly the
    variables the expression uses; returns it unchanged."""
    if not isinstance(variables, dict):
        raise ExpressionError(f"'variables' must be an object, not {json_type(variables)}")
    if len(variables) > max_count:
        raise ExpressionError(
            f"too many variables: {len(variables)}, the limit is {max_count}")
    for name, value in variables.items():
        if name in RESERVED_NAMES:
            raise ExpressionError(
                f"'{name}' is a reserved name (a function, constant or operator) "
                "and cannot be a variable")
        if not IDENTIFIER.match(name):
            raise ExpressionError(f"'{name}' is not a valid variable name")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExpressionError(f"variable '{name}' must be a number, not {json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ExpressionError(f"variable '{name}' must be a finite number")
    missing = sorted(compiled.variables - variables.keys())
    unused = sorted(variables.keys() - compiled.variables)
    problems = []
    if missing:
        problems.append("missing values for " + ", ".join(missing))
    if unused:
        problems.append("unused variables " + ", ".join(unused))
    if problems:
        raise ExpressionError("; ".join(problems))
    return variables


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- results -----------------------------------------------------------------

def finite_result(value: Any) -> Any:
    """Accept a boolean, an integer of sensible size or a finite float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_RESULT_BITS:
            raise CalculationError(
                f"result too large: more than {MAX_RESULT_DIGITS} digits")
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise CalculationError("the result is not a number (NaN)")
        if math.isinf(value):
            raise CalculationError("overflow: the result is infinite")
        return value
    raise CalculationError(f"the result is not a number but {type(value).__name__}")


def number_to_json(value: Any) -> str:
    """JSON text for a number or boolean, in a form that PostgreSQL's jsonb keeps as a
    float: jsonb stores numbers as numeric, which would turn 1e+300 into an
    integer, so floats are written in positional notation with a point."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if "." not in text:
        text += ".0"
    return text


def variables_to_json(variables: dict[str, Any]) -> str:
    """JSON text for checked variables that keeps floats floats in jsonb."""
    return "{" + ",".join(f"{json.dumps(name)}:{number_to_json(value)}"
                          for name, value in variables.items()) + "}"
