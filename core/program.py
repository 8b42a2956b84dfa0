"""A checked tree -> a flat program, and the loop that runs it.

The program is a list of instructions for a small stack machine. It is made
once per expression (the Calculator caches it) and run once per task, without
recursion, so deep nesting costs no Python stack. `if(c, a, b)` and comparison
chains jump over what they do not need, so `if(x != 0, 1/x, 0)` with x = 0 is
0 and `1 > 2 > 1/0` is false, as in Python.
"""

from __future__ import annotations

from typing import Any

from core.semantics import ARITHMETIC, COMPARISONS, FUNCTIONS, SIGNS, UNARY_FUNCTIONS
from core.syntax_tree import Binary, Call, Chain, If, Name, Node, Number, Sign

# Instructions: (opcode, a, b)
CONST, LOAD, UNARY, BINARY, CALL, JUMP_IF_FALSE, JUMP, CHAIN = range(8)


class _Label:
    __slots__ = ("position",)

    def __init__(self):
        self.position = -1


def compile_tree(root: Node) -> tuple[tuple, ...]:
    code: list[list] = []
    work: list[tuple[str, Any]] = [("node", root)]
    while work:
        what, item = work.pop()
        if what == "emit":
            code.append(list(item))
            continue
        if what == "label":
            item.position = len(code)
            continue
        node = item
        # Pushed in reverse: the last pushed is emitted first.
        if isinstance(node, Number):
            code.append([CONST, node.value, None])
        elif isinstance(node, Name):
            code.append([LOAD, node.name, None])
        elif isinstance(node, Sign):
            work += [("emit", (UNARY, SIGNS[node.sign], None)), ("node", node.operand)]
        elif isinstance(node, Binary):
            work += [("emit", (BINARY, ARITHMETIC[node.operator], None)),
                     ("node", node.right), ("node", node.left)]
        elif isinstance(node, Call):
            function = (UNARY_FUNCTIONS[node.function] if node.function in UNARY_FUNCTIONS
                        else FUNCTIONS[node.function][0])
            work.append(("emit", (CALL, function, len(node.arguments))))
            work += [("node", argument) for argument in reversed(node.arguments)]
        elif isinstance(node, If):
            otherwise, end = _Label(), _Label()
            work += [("label", end), ("node", node.when_false), ("label", otherwise),
                     ("emit", (JUMP, end, None)), ("node", node.when_true),
                     ("emit", (JUMP_IF_FALSE, otherwise, None)), ("node", node.condition)]
        elif isinstance(node, Chain):
            # a, b, CHAIN <, c, CHAIN <, ..., z, BINARY <   end:
            end = _Label()
            steps = [("label", end), ("emit", (BINARY, COMPARISONS[node.operators[-1]], None)),
                     ("node", node.operands[-1])]
            for operator, operand in zip(reversed(node.operators[:-1]), reversed(node.operands[1:-1])):
                steps += [("emit", (CHAIN, COMPARISONS[operator], end)), ("node", operand)]
            steps.append(("node", node.operands[0]))
            work += steps
        else:  # pragma: no cover - the tree has no other nodes
            raise TypeError(f"unknown node {node!r}")
    for instruction in code:
        if isinstance(instruction[1], _Label):
            instruction[1] = instruction[1].position
        if isinstance(instruction[2], _Label):
            instruction[2] = instruction[2].position
    return tuple(tuple(instruction) for instruction in code)


def run(code: tuple[tuple, ...], values: dict[str, Any]) -> Any:
    stack: list[Any] = []
    push = stack.append
    pop = stack.pop
    position, end = 0, len(code)
    while position < end:
        opcode, a, b = code[position]
        position += 1
        if opcode == CONST:
            push(a)
        elif opcode == LOAD:
            push(values[a])
        elif opcode == BINARY:
            right = pop()
            stack[-1] = a(stack[-1], right)
        elif opcode == UNARY:
            stack[-1] = a(stack[-1])
        elif opcode == CALL:
            arguments = stack[len(stack) - b:]
            del stack[len(stack) - b:]
            push(a(*arguments))
        elif opcode == JUMP_IF_FALSE:
            if not pop():
                position = a
        elif opcode == JUMP:
            position = a
        else:  # CHAIN: compare, and stop the chain at the first false
            right = pop()
            outcome = a(stack[-1], right)
            if outcome:
                stack[-1] = right
            else:
                stack[-1] = outcome
                position = b
    return stack[-1]
