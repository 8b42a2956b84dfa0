"""A Python client for calculator-service (standard library only).

    from calculator_client import Client
    calc = Client("http://127.0.0.1:5000", key=None)
    calc.calculate("x*t**y", {"x": 10, "t": 11, "y": 1})     # 110

See Client for the rest (submit, submit_many, result, wait, wait_many,
cancel, tasks) and calculator_client.cli for the `calc` command.
"""

from calculator_client.client import (Cancelled, CalculatorError, Client, ExpressionFailed, InvalidItems,
                                      Refused, StillPending, Unavailable)

__all__ = ["Client", "CalculatorError", "Refused", "InvalidItems", "Unavailable", "ExpressionFailed",
           "Cancelled", "StillPending"]
