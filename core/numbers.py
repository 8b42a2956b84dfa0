"""Numbers in and out: variable values, results, and their JSON.

Variables follow PostgreSQL's jsonb, which is where every task's variables
live: jsonb keeps a number as `numeric`, so `1e2` is stored as 100 and `2.50`
as 2.50. The rule, the same for the API and for rows inserted with psql:

- a number written without a decimal point after jsonb's normalisation (no
  fraction digits: 7, -3, 1e2, 1.5e1) is an exact integer, up to
  MAX_NUMBER_LENGTH digits;
- any other number (2.5, 1.0, 1e-3) is a float, and must be one: not too
  large (1e400 as a float is infinite) and not too small to tell from 0
  (1e-400); both are refused with a message rather than rounded away.

A float zero keeps its sign: -0.0 (and -0.00, -0e-3) is the float -0.0, as
in Python; -0 is the integer 0. jsonb cannot hold -0.0, so the database keeps
the sign beside it (sql/016_negative_zero.sql).

JSON is decoded with every number as a Decimal (decode_json), so nothing is
lost before this rule is applied, and no 5,000-digit number trips Python's
integer-string limit.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from core.errors import CalculationError, ExpressionError
from core.parsing import MAX_NUMBER_LENGTH

# Python refuses to print integers longer than this by default; a result that
# long is not useful to anyone and would only be a way to fill the database.
MAX_RESULT_DIGITS = 4300
_MAX_RESULT_BITS = int(MAX_RESULT_DIGITS / math.log10(2))   # below this, surely fewer digits
_TOO_LARGE_RESULT = 10 ** MAX_RESULT_DIGITS
_TOO_MANY_DIGITS = 10 ** MAX_NUMBER_LENGTH


def decode_json(text: str | bytes) -> Any:
    """JSON text -> Python values, every number a Decimal; NaN and Infinity refused."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal,
                      parse_constant=_refuse_constant)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def variable_value(name: str, value: Any) -> int | float:
    """The number a variable's JSON value stands for, or ExpressionError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ExpressionError(f"variable '{name}' must be a number, not {json_type(value)}")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ExpressionError(f"variable '{name}' must be a finite number")
        sign, digits, exponent = value.as_tuple()
        if value == 0:   # jsonb keeps 0e1000 as 0; -0.0 keeps its sign (a float)
            return 0 if exponent >= 0 else (-0.0 if sign else 0.0)
        if exponent >= 0:
            if len(digits) + exponent > MAX_NUMBER_LENGTH:
                raise ExpressionError(
                    f"variable '{name}' is too large: more than {MAX_NUMBER_LENGTH} digits")
            return int(value)
        if len(digits) > MAX_NUMBER_LENGTH:
            raise ExpressionError(
                f"variable '{name}' has too many digits (more than {MAX_NUMBER_LENGTH})")
        number = float(value)
        if math.isinf(number):
            raise ExpressionError(f"variable '{name}' is too large for a number with a fraction")
        if number == 0.0 and value != 0:
            raise ExpressionError(f"variable '{name}' is too small: it would be 0")
        return number
    if isinstance(value, int):
        if abs(value) >= _TOO_MANY_DIGITS:
            raise ExpressionError(
                f"variable '{name}' is too large: more than {MAX_NUMBER_LENGTH} digits")
        return value
    if not math.isfinite(value):
        raise ExpressionError(f"variable '{name}' must be a finite number")
    return value


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def finite_result(value: Any) -> Any:
    """Accept a boolean, an integer of sensible size or a finite float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_RESULT_BITS and abs(value) >= _TOO_LARGE_RESULT:
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
