"""Text -> postfix tokens, with py_expression_eval's parser.

The library tokenizes and orders operators (a shunting-yard) in one pass.
Its ordering has bugs that still produce a well-formed token list, so they
gave silently wrong answers (1+2*-3 was -1): a unary sign had the priority of
`*` and completed the pending `*` too early; `*` ranked below `/` and `%`
(3*3%4 was 3*(3%4)); a call after `^` (2^max(1, 2)) completed the `^`; `^`
grouped from the left. This subclass keeps the library's tokenizer and its
parse loop and replaces the one place operators are ordered (`addfunc`) with
the textbook rules, using the precedence table below:

    lowest   comparisons  == != < > <= >=   (chain as in Python: 3 > 2 > 1)
             + -
             * / %        (all three on one level, left to right)
             unary - +    (-2^2 = -4, -7%3 = 2, 2*-3 = -6)
    highest  ^ **         (right to left; its right operand may be signed: 2^-1)
             calls and functions of one argument bind their argument list

A prefix operator (a sign, sin, a call's opening) never completes an operator
that is waiting for its right operand; an infix operator completes the waiting
ones that bind tighter (or as tight, except for ^, which groups from the right).

Each token's priority also carries its parenthesis depth (10 per level, the
library's convention), which is how core/syntax_tree.py tells `3 > 2 > 1` (a
chain) from `(3 > 2) > 1`, and a call's own commas from parenthesised ones.

The tokenizer gets four fixes: numbers are read with one regular expression at
the position (the library copied the rest of the text for every number, and
re-parsed a run of digits once per digit: quadratic), hexadecimal, octal and
binary integers are read as Python reads them (0x4000), a number starts with
a digit or a point (so `e0` is a name), and comments are whitespace. Errors
name the column (1-based) and say what is missing, tracked by the overrides.
"""

from __future__ import annotations

import re

from py_expression_eval import TFUNCALL, TOP1, TOP2, Token
from py_expression_eval import Parser as _LibraryParser

from core.errors import ExpressionError

# A number literal may have at most this many digits. A float cannot hold more
# than 17 significant digits, and an exact integer this long is already far
# beyond anything a person types.
MAX_NUMBER_LENGTH = 1000

# Priorities within one parenthesis level (the library adds 10 per level).
OR, AND, NOT = 0, 1, 2
COMPARISON = 3
SUM = 4
PRODUCT = 5
SIGN = 6
POWER = 7
CALL = 8       # calls and functions of one argument
LEVEL = 10
COMMA = -1     # a comma sits just below everything inside its parentheses

# The operators the tokenizer knows, in the order it tries them (longest
# first). `||`, `in`, `not`, `and`, `xor` and `or` are read so that the
# checker can say they are not supported. U+2219 and U+2022 are multiplication.
_OPERATORS = (
    ("**", POWER, "**"), ("^", POWER, "^"),
    ("%", PRODUCT, "%"), ("/", PRODUCT, "/"), ("*", PRODUCT, "*"),
    ("\u2219", PRODUCT, "*"), ("\u2022", PRODUCT, "*"),
    ("+", SUM, "+"), ("-", SUM, "-"),
    ("||", COMPARISON, "||"), ("==", COMPARISON, "=="), ("!=", COMPARISON, "!="),
    ("<=", COMPARISON, "<="), (">=", COMPARISON, ">="),
    ("<", COMPARISON, "<"), (">", COMPARISON, ">"),
    ("in ", COMPARISON, "in"), ("not ", NOT, "not"), ("and ", AND, "and"),
    ("xor ", OR, "xor"), ("or ", OR, "or"),
)
_OPERATOR_FIRST_CHARACTERS = frozenset(token[0] for token, _, _ in _OPERATORS)
_RIGHT_ASSOCIATIVE = frozenset({"^", "**"})

_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

_NUMBER_FIRST_CHARACTERS = frozenset("0123456789.")

# What the last thing read was; decides what may come next and the messages.
_START, _OPERAND, _OPERATOR, _FUNCTION, _OPEN, _COMMA = range(6)

_NOT_SUPPORTED = {
    "D": "dice rolls (D) are not supported",
    "and": "'and' is not supported (use if(...) to choose between values)",
    "or": "'or' is not supported (use if(...) to choose between values)",
    "xor": "'xor' is not supported",
    "in": "'in' is not supported",
}


def depth(token: Token) -> int:
    """The parenthesis depth of an operator token (a call's: outside its parentheses)."""
    return int(token.prio_ // LEVEL)


class Parser(_LibraryParser):
    """One instance per thread is reused: parse() resets all of its state."""

    def __init__(self):
        super().__init__(string_literal_quotes=())

    def parse(self, expr):
        self._kind = _START
        self._last_operand = ""     # "number", "name" or ")" when _kind is _OPERAND
        self._function = ""         # the name when _kind is _FUNCTION
        self._open_calls: list[bool] = []
        self._word_at, self._word_text = -1, ""
        return super().parse(expr)

    # --- errors -------------------------------------------------------------

    def _fail(self, position: int, message: str):
        raise ExpressionError(f"parse error at column {position + 1}: {message}")

    def _check_operand_allowed(self, start: int, text: str) -> None:
        if self._kind == _OPERAND:
            self._fail(start, f"an operator is missing before '{text}'")
        if self._kind == _FUNCTION:
            self._fail(start, f"{self._function} is a function: call it like {self._function}(...)")

    def error_parsing(self, column, msg):
        # Most situations are caught by the overrides below with a better
        # message; these are the library's own checks at the end.
        if msg == "parity":
            if self._kind in (_OPERATOR, _OPEN, _COMMA, _START):
                self._fail(column, "the expression is incomplete: an operand is missing at the end")
            self._fail(column, "the expression is incomplete (an operand or a function argument is missing)")
        if msg == 'unmatched "()"':
            self._fail(column, "a '(' is never closed: a ')' is missing")
        if msg == "unknown character":
            character = self.expression[column]
            hints = {"=": " (to compare, write ==)", "'": " (strings are not supported)",
                     '"': " (strings are not supported)", "&": " (and is not supported)",
                     "|": " (or is not supported)", "!": " (to compare, write !=)"}
            self._fail(column, f"unknown character {character!r}{hints.get(character, '')}")
        self._fail(column, msg.replace('"', "'"))

    def _saw(self, kind: int) -> None:
        self._kind = kind

    # --- the tokenizer ------------------------------------------------------

    def isOperator(self):
        start = self.pos
        text = self.expression
        if text[start] not in _OPERATOR_FIRST_CHARACTERS or text.startswith("/*", start):
            return False  # a comment is whitespace (isWhite)
        for token, priority, index in _OPERATORS:
            if text.startswith(token, start):
                break
        else:
            return False
        if self._kind == _FUNCTION:
            self._check_operand_allowed(start, token)
        if index not in ("+", "-", "not") and self._kind in (_START, _OPERATOR, _OPEN, _COMMA):
            where = "the expression starts with" if self._kind == _START else "an operand is missing before"
            self._fail(start, f"{where} '{token.strip()}'")
        self.tokenprio = priority
        self.tokenindex = index
        self.pos += len(token)
        self._saw(_OPERATOR)
        return True

    def isNegativeSign(self):
        # The library drops a unary plus; it is kept (Python: +x), see addfunc.
        return True

    def isComment(self):
        return False  # comments never reach the operator path (see isWhite)

    def isWhite(self):
        if self.expression.startswith("/*", self.pos):
            end = self.expression.find("*/", self.pos + 2)
            if end < 0:
                self._fail(self.pos, "a comment '/*' is never closed with '*/'")
            self.pos = end + 2
            return True
        return super().isWhite()

    def isNumber(self):
        start = self.pos
        if self.expression[start] not in _NUMBER_FIRST_CHARACTERS:
            return False
        match = _NUMBER.match(self.expression, start)
        if match is None:
            return False
        text = match.group()
        self._check_operand_allowed(start, text)
        digits = len(text) - 2 if text[:2].lower() in ("0x", "0o", "0b") else len(text)
        if digits > MAX_NUMBER_LENGTH:
            self._fail(start, f"a number is too long (more than {MAX_NUMBER_LENGTH} digits)")
        if text[:2].lower() in ("0x", "0o", "0b"):
            value = int(text, 0)
        elif "." in text or "e" in text or "E" in text:
            value = float(text)
            if value in (float("inf"), float("-inf")):
                self._fail(start, f"the number {text} is too large")
            if value == 0.0 and any(c in "123456789" for c in text.split("e")[0].split("E")[0]):
                self._fail(start, f"the number {text} is too small (it would be 0)")
        else:
            value = int(text)
        self.tokennumber = value
        self.pos = match.end()
        self._saw(_OPERAND)
        self._last_operand = "number"
        return True

    def isLeftParenth(self):
        start = self.pos
        if self.expression[start] != "(" or not super().isLeftParenth():
            return False
        is_call = self._kind == _OPERAND and self._last_operand in ("name", ")")
        if self._kind == _OPERAND and not is_call:
            self._fail(start, "an operator is missing before '(' (to multiply, write *)")
        if self._kind == _FUNCTION:
            is_call = True
        self._open_calls.append(is_call)
        self._saw(_OPEN)
        return True

    def isRightParenth(self):
        start = self.pos
        if self.expression[start] != ")" or not super().isRightParenth():
            return False
        if self.tmpprio < 0:
            self._fail(start, "a ')' has no matching '('")
        was_call = self._open_calls.pop()
        if self._kind == _OPEN and not was_call:
            self._fail(start, "empty parentheses '()'")
        if self._kind == _OPERATOR:
            self._fail(start, "an operand is missing before ')'")
        if self._kind == _COMMA:
            self._fail(start, "a function argument is missing before ')'")
        self._saw(_OPERAND)
        self._last_operand = ")"
        return True

    def isComma(self):
        start = self.pos
        if self.expression[start] != "," or not super().isComma():
            return False
        if self._kind in (_START, _OPERATOR, _OPEN, _COMMA):
            self._fail(start, "a function argument is missing before ','")
        self._saw(_COMMA)
        return True

    def _not_a_word(self) -> bool:
        # Names start with a letter; the library scans for one at every position.
        character = self.expression[self.pos]
        return character.lower() == character.upper() and character != '"'

    def isConst(self):
        start = self.pos
        if self._not_a_word() or not super().isConst():
            return False
        self._check_operand_allowed(start, self.expression[start:self.pos])
        self._saw(_OPERAND)
        self._last_operand = "number"
        return True

    def _name(self, found: bool, start: int, kind: int) -> bool:
        if not found:
            return False
        name = self.tokenindex
        if name in _NOT_SUPPORTED:
            self._fail(start, _NOT_SUPPORTED[name])
        self._check_operand_allowed(start, name)
        self._saw(kind)
        if kind == _FUNCTION:
            self._function = name
        else:
            self._last_operand = "name"
        return True

    def _word(self) -> str:
        """The name at the position as the library's isOp1/isOp2 read it (a
        cased letter, then cased letters, digits and _), read once."""
        if self._word_at != self.pos:
            text, end = self.expression, self.pos
            while end < len(text):
                c = text[end]
                if c.upper() == c.lower() and (end == self.pos or (c != "_" and not "0" <= c <= "9")):
                    break
                end += 1
            self._word_at, self._word_text = self.pos, text[self.pos:end]
        return self._word_text

    def _operator_word(self, table) -> bool:
        start = self.pos
        if self._not_a_word():
            return False
        word = self._word()
        if not word or word not in table:
            return False
        self.tokenindex = word
        self.tokenprio = 9
        self.pos += len(word)
        return self._name(True, start, _FUNCTION)

    def isOp1(self):
        return self._operator_word(self.ops1)

    def isOp2(self):
        return self._operator_word(self.ops2)

    def isVar(self):
        start = self.pos
        return not self._not_a_word() and self._name(super().isVar(), start, _OPERAND)

    # --- ordering the operators --------------------------------------------

    def addfunc(self, tokenstack, operstack, type_):
        level = self.tmpprio
        index = self.tokenindex
        if type_ == TOP1 and index == "-":    # a sign: the library says "-" for both
            index = self.expression[self.pos - 1]
            priority, prefix = level + SIGN, True
        elif type_ == TOP1:                   # sin, sqrt, ...: binds its parentheses
            priority, prefix = level + CALL, True
        elif type_ == TFUNCALL:               # name( : the '(' already counts in level
            priority, prefix = level - LEVEL + CALL, True
        else:                                 # infix operators and the comma
            priority, prefix = level + self.tokenprio, False
        operator = Token(type_, index, priority, 0)
        if not prefix:
            right = type_ == TOP2 and index in _RIGHT_ASSOCIATIVE
            while operstack and (operstack[-1].prio_ > priority
                                 or (operstack[-1].prio_ == priority and not right)):
                tokenstack.append(operstack.pop())
        operstack.append(operator)


def parse_tokens(parser: Parser, text: str) -> list[Token]:
    """The postfix token list of text, or ExpressionError."""
    try:
        return parser.parse(text).tokens
    except (ExpressionError, MemoryError, RecursionError):
        raise
    except Exception:  # a corner of the library's tokenizer we did not foresee
        raise ExpressionError("parse error: the expression is malformed") from None
