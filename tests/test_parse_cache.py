"""The evaluation children's parse cache: bounded by bytes, never caching a
machine's trouble as the expression's (no database needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import ROOT
from worker.evaluation import ParseCache


def test_the_cache_is_bounded_by_bytes_not_entries():
    cache = ParseCache(max_bytes=200_000)
    for i in range(50):
        text = f"{i} + " + "1 + " * 250 + "1"        # ~1 KB each, ~52 KB estimated
        compiled, error = cache.get(text, 10_000)
        assert error is None and compiled.evaluate({}) == i + 251
        assert cache.size <= cache.max_bytes
    assert 1 <= len(cache.entries) <= 4
    # the most recent stays, the oldest went
    assert (text, 10_000) in cache.entries
    assert ("0 + " + "1 + " * 250 + "1", 10_000) not in cache.entries


def test_errors_are_cached_too_but_an_entry_too_large_is_not():
    cache = ParseCache(max_bytes=10_000)
    assert cache.get("2 +", 100)[1].startswith("parse error at column 4")
    assert ("2 +", 100) in cache.entries
    cache.get("1+" * 1000 + "1", 10_000)
    assert ("1+" * 1000 + "1", 10_000) not in cache.entries


def test_running_out_of_memory_while_parsing_is_not_a_parse_error_and_is_not_cached():
    """A child near MEMORY_LIMIT_MB: the parse of a huge expression fails with
    MemoryError; the task gets 'out of memory', the cache stays empty, and the
    same text parses once memory is there again."""
    script = textwrap.dedent("""
        import resource
        from core.settings import ExpressionLimits
        from worker import evaluation
        limits = ExpressionLimits(max_expression_length=10**9, max_variables=100)
        text = "1+" * 3_000_000 + "1"
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 150 * 2**20, hard))
        result, error = evaluation.calculate(text, {}, limits)
        print(repr(error))
        print(len(evaluation._PARSE_CACHE.entries))
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        print(evaluation.calculate("2+2", {}, limits))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    error, entries, ordinary = done.stdout.splitlines()
    assert error == "'out of memory: the calculation needs too much memory'"
    assert entries == "0"
    assert ordinary == "('4', None)"


def test_the_api_checks_each_distinct_expression_once_and_answers_the_same(client):
    from api import expressions
    text, bad = "x * 12345 + 678", "12345 +* 678"
    answers = [client.post("/api/expression", json={"expression": e, "variables": {"x": 1}})
               for e in (text, text, bad, bad)]
    assert [a.status_code for a in answers] == [202, 202, 400, 400]
    assert answers[2].json == answers[3].json and answers[2].json["msg"].startswith("parse error")
    assert (text, 10_000) in expressions._CHECKED.entries and (bad, 10_000) in expressions._CHECKED.entries
    # The variables are still checked on every request, cached expression or not.
    missing = client.post("/api/expression", json={"expression": text})
    assert missing.status_code == 400 and missing.json["msg"] == "missing values for x"
