"""The two ways an expression can fail, shared by the API and the Calculator."""


class ExpressionError(ValueError):
    """The expression or its variables are not acceptable (a 400 in the API,
    an error outcome for a task inserted with psql)."""


class CalculationError(ArithmeticError):
    """The expression is valid but has no finite real value for these variables."""
