"""What a Calculator accepts from a claimed row, checked in the parent.

A row inserted with psql can hold anything PostgreSQL accepts: a number
with 5,000 digits (which Python's json refuses to read), variables nested
hundreds deep (which pickle cannot send to a child), an expression of 30 MB
(which kills a child with a memory cap before it starts). The claim returns
each row's expression cut just past MAX_EXPRESSION_LENGTH and its variables
as JSON text cut just past MAX_VARIABLES_CHARS; here they are decoded and
checked one row at a time, so that a row's problem becomes that row's error
outcome and never reaches an evaluation process or the Calculator's loop.

Only the shape is checked here (cheap, in the single-threaded parent): the
full rules (the grammar, variable names, the variables the expression uses)
are applied by the evaluation process, the same as for the API.
"""

from __future__ import annotations

import json
from typing import Any

from core.expression import ExpressionError, check_variable_names, decode_json, json_type
from core.numbers import variable_value
from core.settings import ExpressionLimits

# Characters of a row's variables JSON text the Calculator reads. Anything the
# API accepts is far below it (MAX_VARIABLES numbers of at most 1,000 digits).
MAX_VARIABLES_CHARS = 1_000_000
_INFINITIES = (float("inf"), float("-inf"))


def decode_variables(text: str | None) -> tuple[Any, str | None]:
    """(variables, None), or (None, a message) when the JSON text cannot be read.

    The text is jsonb's, which writes every number positionally (1e2 as 100),
    so the C decoder reads almost every row exactly as core/numbers.py would
    from Decimals, at a fifth of the cost in this single-threaded parent. The
    exceptions go the exact way: integers past Python's digit limit, and
    floats that came out 0 or infinite (which might be 1e-400 or 1e400.5)."""
    if text is None:
        return {}, None
    if len(text) > MAX_VARIABLES_CHARS:
        return None, f"'variables' is too large: more than {MAX_VARIABLES_CHARS} characters of JSON"
    try:
        variables = json.loads(text)
        if not isinstance(variables, dict) or not any(
                isinstance(v, float) and (v == 0.0 or v in _INFINITIES) for v in variables.values()):
            return variables, None
    except (ValueError, RecursionError):
        pass
    try:
        return decode_json(text), None
    except RecursionError:
        return None, "'variables' is nested too deeply"
    except ValueError as error:
        reason = str(error).split(";")[0]
        return None, f"'variables' cannot be read: {reason}"


def checked_row(expression: Any, expression_length: int | None, variables: Any,
                limits: ExpressionLimits, negative_zeros: list[str] | None = None) -> tuple[Any, str | None]:
    """(variables as Python numbers, None), or (None, why the row cannot be sent
    to an evaluation process). The variables' rules are the API's own
    (core/expression.py, core/numbers.py); the grammar is applied by the
    evaluation process, as for the API. negative_zeros: the row's
    variables_negative_zero, the names whose 0.0 is -0.0 (sql/016: the
    database checks that each is a float zero)."""
    if not isinstance(expression, str):
        return None, f"'expression' must be a string, not {json_type(expression)}"
    length = expression_length if expression_length is not None else len(expression)
    if length > limits.max_expression_length:
        return None, (f"expression is too long: {length} characters, "
                      f"the limit is {limits.max_expression_length}")
    try:
        check_variable_names(variables, limits.max_variables)
        values = {name: variable_value(name, value) for name, value in variables.items()}
        for name in negative_zeros or ():
            if type(values.get(name)) is float and values[name] == 0.0:
                values[name] = -0.0
        return values, None
    except ExpressionError as error:
        return None, str(error)
