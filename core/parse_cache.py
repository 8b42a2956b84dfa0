"""Parsed expressions by text, bounded in bytes: the Calculator's evaluation
children and the API (which checks each distinct expression once per
process) keep one each."""

from __future__ import annotations

import threading
from collections import OrderedDict

from core.expression import CompiledExpression, ExpressionError, compile_expression


class ParseCache:
    """Parsed expressions and parse errors by text, least recently used out,
    bounded by an estimate of the bytes they hold (a parsed expression takes
    some 50 times its text), not by their number: 450 distinct 10 KB
    expressions must not push a child into MEMORY_LIMIT_MB.

    Parsing costs ~50 us, evaluating a parsed expression a few; the same
    expression with other variables is the common case. A MemoryError while
    parsing propagates (it is the machine's trouble, not the expression's)
    and is never cached."""

    BYTES_PER_CHARACTER = 50
    OVERHEAD = 2000

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[tuple[str, int], tuple] = OrderedDict()
        self._lock = threading.Lock()  # the API's threads share one (gthread)

    @classmethod
    def _cost(cls, text: str) -> int:
        return cls.OVERHEAD + cls.BYTES_PER_CHARACTER * len(text)

    def get(self, text: str, max_length: int) -> tuple[CompiledExpression | None, str | None]:
        key = (text, max_length)
        with self._lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                return entry
        try:
            entry = (compile_expression(text, max_length), None)
        except ExpressionError as error:
            entry = (None, str(error))
        cost = self._cost(text)
        with self._lock:
            if cost <= self.max_bytes and key not in self.entries:
                self.entries[key] = entry
                self.size += cost
                while self.size > self.max_bytes:
                    (old_text, _), _ = self.entries.popitem(last=False)
                    self.size -= self._cost(old_text)
        return entry
