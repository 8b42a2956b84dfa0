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

from py_expression_eval import TFUNCALL, TOP1, TOP2, TVAR, Token
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
    ("%", PRODUCT, "%"), ("//", PRODUCT, "//"), ("/", PRODUCT, "/"), ("*", PRODUCT, "*"),
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

# Python's number literals: 0x/0o/0b integers, decimals with optional point and
# exponent, single underscores between digits (1_000).
_DIGITS = r"[0-9](?:_?[0-9])*"
_NUMBER = re.compile(
    r"0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+"
    rf"|(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][-+]?{_DIGITS})?")
_LEADING_ZERO = re.compile(r"0[0_]*[1-9]")  # as Python: 0_0 and 00 are 0, 0_1 and 007 are refused
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")

_NUMBER_FIRST_CHARACTERS = frozenset("0123456789.")

# What the last thing read was; decides what may come next and the messages.
_START, _OPERAND, _OPERATOR, _FUNCTION, _OPEN, _COMMA = range(6)

_UNSUPPORTED_OPERATORS = {
    "<<": "shift operators (<<, >>) are not supported",
    ">>": "shift operators (<<, >>) are not supported",
}
_NOT_SUPPORTED = {
    "None": "'None' is not a number",
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
        # Python's boolean literals; comparisons give the same values.
        self.consts = {"E": self.consts["E"], "PI": self.consts["PI"], "True": True, "False": False}

    def parse(self, expr):
        self._kind = _START
        self._last_operand = ""     # "number", "name" or ")" when _kind is _OPERAND
        self._function = ""         # the name when _kind is _FUNCTION
        self._open: list[tuple[bool, int]] = []   # (is a call, column) of each open '('
        self._start = 0             # where the token being read starts
        self._word_at, self._word_text = -1, ""
        self._name_columns: list[int] = []
        return super().parse(expr)

    # --- errors -------------------------------------------------------------

    def _fail(self, position: int, message: str):
        raise ExpressionError(f"parse error at column {position + 1}: {message}")

    def _not_after_function(self, start: int) -> None:
        if self._kind == _FUNCTION:
            self._fail(start, f"{self._function} is a function: call it like {self._function}(...)")

    def _check_operand_allowed(self, start: int, text: str) -> None:
        if self._kind == _OPERAND:
            if text == "if":
                self._fail(start, "Python's 'a if c else b' is not supported: write if(c, a, b)")
            self._fail(start, f"an operator is missing before '{text}'")
        self._not_after_function(start)

    def _in_call(self) -> bool:
        return bool(self._open) and self._open[-1][0]

    def error_parsing(self, column, msg):
        # Most situations are caught by the overrides below with a better
        # message; these are the library's own checks at the end.
        if msg == "parity":
            self._not_after_function(self._start)
            if self._kind in (_OPERATOR, _OPEN, _COMMA, _START):
                self._fail(column, "the expression is incomplete: an operand is missing at the end")
            self._fail(column, "the expression is incomplete (an operand or a function argument is missing)")
        if msg == 'unmatched "()"' and self._open:
            self._fail(self._open[-1][1], "this '(' is never closed: a ')' is missing")
        if msg == "unknown character":
            character = self.expression[column]
            hints = {"=": " (to compare, write ==)", "'": " (strings are not supported)",
                     '"': " (strings are not supported)", "&": " (and is not supported)",
                     "|": " (or is not supported)", "!": " (to compare, write !=)",
                     "~": " (bitwise operators are not supported)"}
            self._fail(column, f"unknown character {character!r}{hints.get(character, '')}")
        self._fail(self._start, msg.replace('"', "'"))

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
        if text.startswith(("<<", ">>"), start):
            self._fail(start, _UNSUPPORTED_OPERATORS[text[start:start + 2]])
        self._not_after_function(start)
        if index not in ("+", "-", "not") and self._kind in (_START, _OPERATOR, _OPEN, _COMMA):
            where = "the expression starts with" if self._kind == _START else "an operand is missing before"
            self._fail(start, f"{where} '{token.strip()}'")
        self._start = start
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
        prefixed = text[:2].lower() in ("0x", "0o", "0b")
        mantissa = text if prefixed else re.split("[eE]", text)[0]
        digits = sum(c not in "._" for c in mantissa) - (2 if prefixed else 0)
        if digits > MAX_NUMBER_LENGTH:
            self._fail(start, f"a number is too long (more than {MAX_NUMBER_LENGTH} digits)")
        if prefixed:
            value = int(text, 0)
        elif "." in text or "e" in text or "E" in text:
            value = float(text)
            if value in (float("inf"), float("-inf")):
                self._fail(start, f"the number {text} is too large")
            if value == 0.0 and any(c in "123456789" for c in mantissa):
                self._fail(start, f"the number {text} is too small (it would be 0)")
        else:
            if _LEADING_ZERO.match(text):
                self._fail(start, f"leading zeros are not allowed in {text} (as in Python; "
                                  "for an octal number write 0o...)")
            value = int(text)
        self.tokennumber = value
        self.pos = match.end()
        self._start = start
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
        self._open.append((is_call, start))
        self._start = start
        self._saw(_OPEN)
        return True

    def isRightParenth(self):
        start = self.pos
        if self.expression[start] != ")" or not super().isRightParenth():
            return False
        if self.tmpprio < 0:
            self._fail(start, "a ')' has no matching '('")
        self._not_after_function(start)
        was_call = self._in_call()
        if self._kind == _OPEN and not was_call:
            self._fail(start, "empty parentheses '()'")
        if self._kind == _OPERATOR:
            self._fail(start, "an operand is missing before ')'")
        if self._kind == _COMMA:
            self._fail(start, "a function argument is missing before ')'" if was_call
                       else "commas may only separate the arguments of a function")
        self._open.pop()
        self._start = start
        self._saw(_OPERAND)
        self._last_operand = ")"
        return True

    def isComma(self):
        start = self.pos
        if self.expression[start] != "," or not super().isComma():
            return False
        self._not_after_function(start)
        if not self._in_call():
            self._fail(start, "commas may only separate the arguments of a function")
        if self._kind in (_START, _OPERATOR, _OPEN, _COMMA):
            self._fail(start, "a function argument is missing before ','")
        self._start = start
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
        self._start = start
        self._saw(_OPERAND)
        self._last_operand = "number"
        return True

    def _name(self, start: int, kind: int) -> bool:
        name = self.tokenindex
        if name in _NOT_SUPPORTED:
            self._fail(start, _NOT_SUPPORTED[name])
        if '"' in name:
            self._fail(start + name.index('"'), "unknown character '\"' (strings are not supported)")
        self._check_operand_allowed(start, name)
        self._start = start
        self._saw(kind)
        if kind == _FUNCTION:
            self._function = name
        else:
            self._last_operand = "name"
            self._name_columns.append(start + 1)
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
        return self._name(start, _FUNCTION)

    def isOp1(self):
        return self._operator_word(self.ops1)

    def isOp2(self):
        return self._operator_word(self.ops2)

    def isVar(self):
        start = self.pos
        if self._not_a_word():
            return False
        # The library's rule (a cased letter or ", then those, digits, _ . "),
        # with a regular expression for the ASCII part.
        match = _NAME.match(self.expression, start)
        end = match.end() if match else start
        following = self.expression[end:end + 1]
        if match is None or (following and (following == '"' or following.upper() != following.lower())):
            if not super().isVar():
                return False
        else:
            self.tokenindex = match.group()
            self.tokenprio = 6
            self.pos = end
        return self._name(start, _OPERAND)

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
        operator.column = self._start + 1     # for the checker's messages
        if not prefix:
            right = type_ == TOP2 and index in _RIGHT_ASSOCIATIVE
            while operstack and (operstack[-1].prio_ > priority
                                 or (operstack[-1].prio_ == priority and not right)):
                tokenstack.append(operstack.pop())
        operstack.append(operator)


def parse_tokens(parser: Parser, text: str) -> list[Token]:
    """The postfix token list of text, or ExpressionError."""
    try:
        tokens = parser.parse(text).tokens
    except (ExpressionError, MemoryError, RecursionError):
        raise
    except Exception:  # a corner of the library's tokenizer we did not foresee
        raise ExpressionError("parse error: the expression is malformed") from None
    # Names keep their order in the postfix list: give each its column.
    columns = iter(parser._name_columns)
    for token in tokens:
        if token.type_ == TVAR:
            token.column = next(columns, None)
    return tokens
