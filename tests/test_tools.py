"""Helpers that do not need a server."""

from __future__ import annotations


def test_an_error_is_summed_up_in_one_line_even_when_it_says_nothing():
    from core.database import error_summary
    assert error_summary(OSError("connection refused\n\tIs the server running?")) == "connection refused"
    assert error_summary(OSError("")) == "OSError"
