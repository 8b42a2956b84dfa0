"""What a valid expression is, and how one is calculated: the one entry point.

The single definition of the accepted grammar, shared by the API (which
refuses bad input with a 400) and the Calculator (which turns the same
problems into error outcomes for tasks inserted with psql). No eval or exec:

    text --core/parsing.py-->      postfix tokens (py_expression_eval's parser,
                                   with its operator ordering fixed)
         --core/syntax_tree.py-->  a checked tree (whitelist, arities, chains, if)
         --core/program.py-->      a flat program for a small stack machine
         --core/semantics.py       what each operator and function computes
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from core.errors import CalculationError, ExpressionError
from core.numbers import (MAX_RESULT_DIGITS, decode_json, finite_result, json_type,
                          number_to_json, variable_value, variables_to_json)
from core.parsing import MAX_NUMBER_LENGTH, Parser, parse_tokens
from core.program import compile_tree, run
from core.syntax_tree import IDENTIFIER, RESERVED_NAMES, build_tree

__all__ = [
    "CalculationError", "CompiledExpression", "ExpressionError", "IDENTIFIER",
    "MAX_NUMBER_LENGTH", "MAX_RESULT_DIGITS", "RESERVED_NAMES", "check_variable_names",
    "check_variables", "compile_expression", "decode_json", "finite_result", "json_type",
    "number_to_json", "variables_to_json",
]

_parsers = threading.local()


def _parser() -> Parser:
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = Parser()
    return parser


@dataclass(frozen=True)
class CompiledExpression:
    """A checked expression, ready to be evaluated many times."""

    text: str
    variables: frozenset[str]
    _program: tuple

    def evaluate(self, values: dict[str, Any]) -> Any:
        """Evaluate with already checked values; raises CalculationError."""
        try:
            value = run(self._program, values)
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
    """Parse and check an expression; raises ExpressionError saying what is wrong.

    MemoryError and RecursionError are not expression errors: they propagate,
    so that a machine's trouble is never reported (or cached) as a parse error.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"'expression' must be a string, not {json_type(text)}")
    if len(text) > max_length:
        raise ExpressionError(
            f"expression is too long: {len(text)} characters, the limit is {max_length}")
    if not text.strip():
        raise ExpressionError("expression is empty")
    _check_characters(text)
    root, variables = build_tree(parse_tokens(_parser(), text))
    return CompiledExpression(text, variables, compile_tree(root))


def _check_characters(text: str) -> None:
    position = text.find("\x00")
    if position >= 0:
        raise ExpressionError(f"the expression contains a NUL character at column {position + 1}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ExpressionError(
            f"the expression contains an invalid character (a lone surrogate) at column "
            f"{error.start + 1}") from None


def check_variable_names(variables: Any, max_count: int) -> None:
    """The checks on variables that do not need the expression: an object, not
    too many, valid names that are not reserved."""
    if not isinstance(variables, dict):
        raise ExpressionError(f"'variables' must be an object, not {json_type(variables)}")
    if len(variables) > max_count:
        raise ExpressionError(
            f"too many variables: {len(variables)}, the limit is {max_count}")
    for name in variables:
        if name in RESERVED_NAMES:
            raise ExpressionError(
                f"'{name}' is a reserved name (a function, constant or operator) "
                "and cannot be a variable")
        if not IDENTIFIER.match(name):
            raise ExpressionError(f"'{name}' is not a valid variable name")


def check_variables(compiled: CompiledExpression, variables: Any, max_count: int) -> dict:
    """Check that variables is an object of numbers naming exactly the variables
    the expression uses; returns them as Python numbers (see core/numbers.py)."""
    check_variable_names(variables, max_count)
    values = {name: variable_value(name, value) for name, value in variables.items()}
    missing = sorted(compiled.variables - values.keys())
    unused = sorted(values.keys() - compiled.variables)
    problems = []
    if missing:
        problems.append("missing values for " + ", ".join(missing))
    if unused:
        problems.append("unused variables " + ", ".join(unused))
    if problems:
        raise ExpressionError("; ".join(problems))
    return values
