"""Parsing cost: the worst shapes of expression text, in CPU time per 10 KB.

    python -m bench.parsing

The target (BENCHMARKS.md, "The targets"): one request costs at most ~50 ms of CPU per 10 KB of
expression text. Each shape is 10,000 characters (the default
MAX_EXPRESSION_LENGTH); a 1 MB bulk request is 100 of them, so its cost is
100 x the per-10-KB figure. Also the parse of an ordinary expression, and the
share the parse cache saves in the Calculator (parse vs evaluate).
"""

from __future__ import annotations

import json
import time

from core.expression import check_variables, compile_expression

LIMIT = 10_000

SHAPES = {
    "long literals (11 x 900 digits)": "+".join(["1" * 900] * 11),
    "sums (1+1+...)": "1+" * 4999 + "1",
    "signs (----1)": "-" * 9999 + "1",
    "parentheses ((((1))))": "(" * 4999 + "1" + ")" * 4999,
    "names (x + x + ...)": "x + " * 2499 + "x",
    "calls (max(sin(x), ...))": "max(" + "sin(x), " * 900 + "x)",
    "comparison chain (1<2<...)": "<".join(["1"] * 5000),
    "whitespace": " " * 9999 + "1",
    "a comment": "1 /*" + "x" * 9990 + "*/",
}
ORDINARY = "x*t**y + sin(x) / 3 - 2"


def cpu_ms(function, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best * 1000


def measure() -> dict:
    figures = {}
    for name, text in SHAPES.items():
        assert len(text) <= LIMIT, name
        per_10kb = cpu_ms(lambda: compile_expression(text, LIMIT)) * LIMIT / len(text)
        figures[name] = round(per_10kb, 2)
    worst = max(figures, key=figures.get)
    ordinary_parse = cpu_ms(lambda: [compile_expression(ORDINARY, LIMIT) for _ in range(1000)])
    compiled = compile_expression(ORDINARY, LIMIT)
    values = {"x": 10, "t": 11, "y": 1}
    ordinary_eval = cpu_ms(lambda: [compiled.evaluate(check_variables(compiled, values, 100))
                                    for _ in range(1000)])
    return {"per_10kb_ms": figures, "worst_shape": worst, "worst_per_10kb_ms": figures[worst],
            "one_mb_bulk_request_ms": round(figures[worst] * 100, 1),
            "ordinary_parse_us": round(ordinary_parse, 1),
            "ordinary_evaluate_us": round(ordinary_eval, 2)}


def main() -> None:
    figures = measure()
    width = max(len(n) for n in figures["per_10kb_ms"])
    print("parsing cost, CPU ms per 10 KB of expression text")
    for name, value in figures["per_10kb_ms"].items():
        print(f"  {name:{width}}  {value:8.2f}")
    print(f"  worst: {figures['worst_shape']} -> a 1 MB bulk request ~{figures['one_mb_bulk_request_ms']} ms")
    print(f"  ordinary expression {ORDINARY!r}: parse {figures['ordinary_parse_us']} us, "
          f"evaluate (cached parse) {figures['ordinary_evaluate_us']} us")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
