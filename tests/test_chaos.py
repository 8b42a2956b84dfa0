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
    # The faults really happened (check() also reports a missing one as broken).
    assert figures.calculators_frozen == 1, report
    assert figures.evaluators_killed >= 1 and figures.evaluator_deaths_logged >= 1, report
    assert figures.stale_discarded >= 1, report
    assert "api_user and worker_user" in report
