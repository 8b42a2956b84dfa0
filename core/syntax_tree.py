"""Postfix tokens -> a checked expression tree.

The library's token list is rebuilt into a tree, and every rule of the
grammar that is not about precedence is checked here, once: only whitelisted
operators and functions, the number of arguments of each call, commas only
between a call's arguments, names that are valid variables. Comparisons at
the same parenthesis depth become one chain (3 > 2 > 1 means 3 > 2 and
2 > 1, as in Python); `if` becomes its own node so that it evaluates only the
branch it takes. The tree is built with an explicit stack (no recursion), so
any nesting the length limit allows is fine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Union

from py_expression_eval import TFUNCALL, TNUMBER, TOP1, TOP2, TVAR

from core.errors import ExpressionError
from core.parsing import Parser, depth
from core.semantics import (ARITHMETIC, CALLABLE_NAMES, COMPARISONS, FUNCTIONS, IF, SIGNS,
                            UNARY_FUNCTIONS)

IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

_LIBRARY = Parser()
# Every word the library's tokenizer treats as something other than a
# variable; none of them can be a variable name.
RESERVED_NAMES = frozenset(
    [n for n in _LIBRARY.ops1 if IDENTIFIER.match(n)]
    + [n for n in _LIBRARY.ops2 if IDENTIFIER.match(n)]
    + list(_LIBRARY.functions) + list(_LIBRARY.consts) + list(CALLABLE_NAMES)
)


# --- the tree ----------------------------------------------------------------

@dataclass(slots=True)
class Number:
    value: Any


@dataclass(slots=True)
class Name:
    name: str


@dataclass(slots=True)
class Sign:
    sign: str            # "-" or "+"
    operand: "Node"


@dataclass(slots=True)
class Binary:
    operator: str        # a key of ARITHMETIC
    left: "Node"
    right: "Node"


@dataclass(slots=True)
class Chain:
    operators: tuple[str, ...]     # keys of COMPARISONS, one fewer than operands
    operands: tuple["Node", ...]


@dataclass(slots=True)
class Call:
    function: str        # a key of FUNCTIONS or UNARY_FUNCTIONS
    arguments: tuple["Node", ...]


@dataclass(slots=True)
class If:
    condition: "Node"
    when_true: "Node"
    when_false: "Node"


Node = Union[Number, Name, Sign, Binary, Chain, Call, If]


# --- markers that exist only while building -----------------------------------

@dataclass(slots=True)
class _FunctionName:
    name: str


@dataclass(slots=True)
class _Arguments:
    items: list
    depth: int


@dataclass(slots=True)
class _Chain:
    operators: list = field(default_factory=list)
    operands: list = field(default_factory=list)
    depth: int = 0


_EMPTY = object()   # the argument list of f()


def build_tree(tokens) -> tuple[Node, frozenset[str]]:
    """The tree of a postfix token list and the variable names it uses."""
    stack: list[Any] = []
    variables: set[str] = set()

    def value(context: str):
        if not stack:
            raise ExpressionError("parse error: the expression is malformed")
        node = stack.pop()
        if isinstance(node, _FunctionName):
            raise ExpressionError(f"{node.name} is a function: call it like {node.name}(...)")
        if isinstance(node, _Arguments):
            raise ExpressionError(
                f"commas may only separate the arguments of a function ({context} takes one value)")
        if node is _EMPTY:
            raise ExpressionError("empty parentheses '()'")
        if isinstance(node, _Chain):
            return Chain(tuple(node.operators), tuple(node.operands))
        return node

    for token in tokens:
        try:
            kind = token.type_
            if kind == TNUMBER:
                stack.append(_EMPTY if isinstance(token.number_, list) else Number(token.number_))
            elif kind == TVAR:
                stack.append(_name(token.index_, variables))
            elif kind == TOP1:
                name = token.index_
                if name in SIGNS:
                    stack.append(Sign(name, value(f"the sign '{name}'")))
                elif name in UNARY_FUNCTIONS:
                    arguments = _arguments(stack, depth(token), name)
                    _check_arity(name, len(arguments), 1, 1)
                    stack.append(Call(name, tuple(arguments)))
                else:
                    raise ExpressionError(f"operator '{name}' is not supported")
            elif kind == TOP2 and token.index_ == ",":
                right = value("a function argument")
                left = stack[-1] if stack else None
                if isinstance(left, _Arguments) and left.depth == depth(token):
                    left.items.append(right)
                else:
                    stack.append(_Arguments([value("a function argument"), right], depth(token)))
            elif kind == TOP2:
                operator = token.index_
                if operator not in ARITHMETIC and operator not in COMPARISONS:
                    raise ExpressionError(f"operator '{operator}' is not supported")
                right = value(f"operator '{operator}'")
                if operator in COMPARISONS:
                    left = stack[-1] if stack else None
                    if isinstance(left, _Chain) and left.depth == depth(token):
                        left.operators.append(operator)
                        left.operands.append(right)
                        continue
                    left = value(f"operator '{operator}'")
                    stack.append(_Chain([operator], [left, right], depth(token)))
                else:
                    left = value(f"operator '{operator}'")
                    stack.append(Binary(operator, left, right))
            elif kind == TFUNCALL:
                arguments = _arguments(stack, depth(token), "a call")
                function = stack.pop() if stack else None
                if not isinstance(function, _FunctionName):
                    if isinstance(function, Name):
                        raise ExpressionError(
                            f"unknown function '{function.name}' (to multiply, write "
                            f"{function.name}*(...))")
                    raise ExpressionError("only functions can be called: put an operator before '('")
                stack.append(_call(function.name, arguments))
            else:
                raise ExpressionError("parse error: the expression is malformed")
        except ExpressionError as error:
            column = getattr(token, "column", None)
            if column is None or "column" in str(error):
                raise
            raise ExpressionError(f"{error} (at column {column})") from None

    root = value("the expression")
    if stack:
        raise ExpressionError("parse error: the expression is malformed")
    return root, frozenset(variables)


def _name(name: str, variables: set[str]):
    if name in CALLABLE_NAMES:
        return _FunctionName(name)
    if name in RESERVED_NAMES:
        raise ExpressionError(f"function '{name}' is not supported")
    if not IDENTIFIER.match(name):
        raise ExpressionError(f"'{name}' is not a valid variable name")
    variables.add(name)
    return Name(name)


def _arguments(stack: list, call_depth: int, context: str) -> list:
    """The argument list on top of the stack of a call at call_depth."""
    if not stack:
        raise ExpressionError("parse error: the expression is malformed")
    top = stack.pop()
    if top is _EMPTY:
        return []
    if isinstance(top, _Arguments):
        if top.depth != call_depth:
            raise ExpressionError(
                "commas may only separate the arguments of a function "
                "(a list in parentheses is not a value)")
        return top.items
    if isinstance(top, _FunctionName):
        raise ExpressionError(f"{top.name} is a function: call it like {top.name}(...)")
    if isinstance(top, _Chain):
        top = Chain(tuple(top.operators), tuple(top.operands))
    return [top]


def _check_arity(name: str, count: int, least: int, most: int) -> None:
    if not least <= count <= most:
        wanted = str(least) if least == most else f"{least} to {most}"
        noun = "argument" if wanted == "1" else "arguments"
        raise ExpressionError(f"{name} takes {wanted} {noun}, not {count}")


def _call(name: str, arguments: list):
    if name == IF:
        _check_arity(name, len(arguments), 3, 3)
        return If(*arguments)
    _, least, most = FUNCTIONS[name]
    _check_arity(name, len(arguments), least, most)
    return Call(name, tuple(arguments))
