"""The short chaos run (the long one: `make chaos`, see tests/chaos.py)."""

from __future__ import annotations

from tests.chaos import run


def test_nothing_is_lost_or_wrong_under_faults(tmp_path, capsys):
    figures, broken = run(expressions=300, fault_seconds=15, seed=20261128, workdir=tmp_path)
    report = capsys.readouterr().out
    assert broken == [], report
    assert figures.calculators_killed >= 3 and figures.database_restarts == 1, report
    assert figures.sigterm_exit_code == 0, report
    assert figures.submitted_http + figures.submitted_sql == 300, report
