"""calc: calculator-service from the command line (standard library only).

    calc "x*t**y" x=10 t=11 y=1     # prints 110
    calc --file expressions.txt     # one expression per line, in bulk

Submits, waits for the outcome with ?wait= (no polling loop), prints the
result, or the error on stderr. Exit status: 0 when every result is a
number, 1 when any is an error, 2 when the request itself was refused or the
API could not be reached, 3 when results were still pending after --timeout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from decimal import Decimal

from calculator_client.client import (DEFAULT_URL, MAX_BATCH, CalculatorError, Client, InvalidItems, Refused,
                                      StillPending)

MAX_NUMBER_LENGTH = 1000   # the API's limit on the digits of a number

EPILOG = """\
where the API is:
  --url, else the CALCULATOR_URL environment variable, else http://127.0.0.1:5000

the API key (when the service runs with AUTH=required):
  --key, else the CALCULATOR_API_KEY environment variable

the --file format:
  one expression per line, without variables; blank lines and lines starting
  with # are skipped. Submitted in batches of at most 1,000 (fewer when the
  key may have fewer unfinished tasks: each batch waits for room); errors
  name the line.

retries:
  every submission carries an Idempotency-Key, so a submission whose answer was
  lost (a dropped connection, a 503) is sent again safely: it cannot create a
  second task. A 429 (a key's rate or unfinished-task limit) is retried after
  the Retry-After the API names, until --timeout.
"""


class UsageError(CalculatorError):
    pass


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def parse_variables(assignments: list[str]) -> dict:
    """name=value pairs -> the numbers the API will take them for: a value
    without a fraction after normalisation (7, 1e2) is an exact integer,
    any other a float that must be one (not infinite, not 0 for a non-zero)."""
    variables = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise UsageError(f"variables are name=value, not {assignment!r}")
        if not _JSON_NUMBER.fullmatch(text):
            raise UsageError(f"the value of {name} is not a number: {text!r}")
        variables[name] = _number(name, Decimal(text))
    return variables


def _number(name: str, value: Decimal) -> int | float:
    sign, digits, exponent = value.as_tuple()
    if value == 0:   # 0e1000 is the integer 0; -0.0 keeps its sign, as in Python
        return 0 if exponent >= 0 else (-0.0 if sign else 0.0)
    if exponent >= 0:
        if len(digits) + exponent > MAX_NUMBER_LENGTH:
            raise UsageError(f"variable '{name}' is too large: more than {MAX_NUMBER_LENGTH} digits")
        return int(value)
    if len(digits) > MAX_NUMBER_LENGTH:
        raise UsageError(f"variable '{name}' has too many digits (more than {MAX_NUMBER_LENGTH})")
    number = float(value)
    if math.isinf(number):
        raise UsageError(f"variable '{name}' is too large for a number with a fraction")
    if number == 0.0:
        raise UsageError(f"variable '{name}' is too small: it would be 0")
    return number


def ask_later(client: Client, path: str, key_from: str | None) -> str:
    """A curl command that reads path, with the key's header when one is used (never the key itself)."""
    header = ""
    if key_from == "env":
        header = '-H "Authorization: Bearer $CALCULATOR_API_KEY" '
    elif key_from == "option":
        header = '-H "Authorization: Bearer <the key given with --key>" '
    return f"curl {header}'{client.url}{path}'"


def run_one(client: Client, expression: str, assignments: list[str], timeout: float, key_from) -> int:
    expression_id = client.submit(expression, parse_variables(assignments))
    try:
        outcome = client.wait(expression_id, timeout)
    except StillPending:
        raise StillPending(f"expression {expression_id} is still pending after {timeout:g} s; ask later: "
                           + ask_later(client, f"/api/result/{expression_id}", key_from), [expression_id]) from None
    if outcome["status"] == "done":
        print(json.dumps(outcome["result"]))
        return 0
    print(f"error: {outcome.get('msg', outcome['status'])}", file=sys.stderr)
    return 1


def read_expressions(path: str) -> list[tuple[int, str]]:
    """(line number, expression) of every line that is not blank or a comment."""
    with open(path) as lines:
        return [(number, line.strip()) for number, line in enumerate(lines, 1)
                if line.strip() and not line.lstrip().startswith("#")]


_AT_MOST = re.compile(r"send at most (\d+) at a time")


def submit_file(client: Client, lines: list[tuple[int, str]], deadline: float, batch: int = MAX_BATCH) -> list[int]:
    """Submit in batches the service admits: a batch larger than the key may
    ever have unfinished (MAX_PENDING_PER_KEY, a 400 naming the most) is made
    smaller; a batch refused for want of room (429) is sent again after its
    Retry-After, until the deadline."""
    ids: list[int] = []
    start = 0
    while start < len(lines):
        chunk = lines[start:start + batch]
        try:
            accepted = client.submit_many([e for _, e in chunk], retry_for=max(0.0, deadline - time.monotonic()))
        except InvalidItems as invalid:
            details = "".join(f"\n  line {chunk[e['index']][0]}: {e['msg']}" for e in invalid.errors)
            done = (f"lines {lines[0][0]}-{lines[start - 1][0]} were submitted before "
                    f"(expression ids {ids[0]}-{ids[-1]}); ") if ids else ""
            raise Refused(f"{done}{len(invalid.errors)} of the {len(chunk)} expressions on lines "
                          f"{chunk[0][0]}-{chunk[-1][0]} are invalid, so nothing from line "
                          f"{chunk[0][0]} on was submitted:{details}", 400) from None
        except Refused as refused:
            most = _AT_MOST.search(refused.msg)
            if refused.status == 400 and most and 0 < int(most.group(1)) < len(chunk):
                batch = int(most.group(1))
                continue
            if refused.status == 429 and ids:
                raise Refused(f"{refused.msg} (lines {lines[0][0]}-{lines[start - 1][0]} were submitted: "
                              f"expression ids {ids[0]}-{ids[-1]})", 429) from None
            raise
        ids += accepted
        start += len(chunk)
    return ids


def run_file(client: Client, path: str, timeout: float, key_from) -> int:
    lines = read_expressions(path)
    if not lines:
        raise UsageError(f"{path} has no expressions (blank lines and # comments are skipped)")
    deadline = time.monotonic() + timeout
    ids = submit_file(client, lines, deadline)
    try:
        outcomes = client.wait_many(ids, max(0.0, deadline - time.monotonic()))
    except StillPending as pending:
        waiting = pending.expression_ids
        raise StillPending(f"{len(waiting)} of {len(ids)} expressions are still pending after {timeout:g} s "
                           f"(ids {waiting[0]}-{waiting[-1]}); ask later: "
                           + ask_later(client, f"/api/results?ids={waiting[0]},...", key_from), waiting) from None
    print(f"{len(ids)}/{len(ids)} done", file=sys.stderr)
    failed = 0
    for (_, expression), outcome in zip(lines, outcomes):
        if outcome["status"] == "done":
            print(f"{expression} = {json.dumps(outcome['result'])}")
        else:
            failed += 1
            print(f"{expression} : error: {outcome.get('msg', outcome['status'])}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calc", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("expression", nargs="?", help="the expression, e.g. 'x*t**y'")
    parser.add_argument("variables", nargs="*", help="name=value for each variable, e.g. x=10")
    parser.add_argument("--file", help="submit every line of this file (see the format below)")
    parser.add_argument("--url", default=os.environ.get("CALCULATOR_URL", DEFAULT_URL),
                        help=f"the API (default: $CALCULATOR_URL or {DEFAULT_URL})")
    parser.add_argument("--key", help="the API key, with AUTH=required (default: $CALCULATOR_API_KEY)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for results before giving up with exit status 3 (default 120)")
    args = parser.parse_args(argv)
    if args.file and args.expression:
        parser.error("give an expression or --file, not both")
    if not args.file and not args.expression:
        parser.error("give an expression (e.g. \"x*2\" x=21) or --file with one expression per line")
    key_from = "option" if args.key else ("env" if os.environ.get("CALCULATOR_API_KEY") else None)
    key = (args.key or os.environ.get("CALCULATOR_API_KEY") or "").strip() or None  # a key read from a file keeps its line end
    if key is not None and not (key.isascii() and key.isprintable() and " " not in key):
        parser.error("the API key holds characters no key has (spaces, control or non-ASCII characters): "
                     "check --key or CALCULATOR_API_KEY")
    client = Client(args.url, key=key, retry_for=min(args.timeout, 60.0))
    started = time.monotonic()
    try:
        if args.file:
            code = run_file(client, args.file, args.timeout, key_from)
        else:
            code = run_one(client, args.expression, args.variables, args.timeout, key_from)
    except StillPending as pending:
        print(f"pending: {pending}", file=sys.stderr)
        return 3
    except CalculatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.file:
        print(f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
