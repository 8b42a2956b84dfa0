"""What a CI run must not lose silently: the browser tests (a CI that
ran `make test` without Chromium dropped them with one header line)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def run_pytest_without_chromium(**extra_env) -> subprocess.CompletedProcess:
    """pytest on one quick test file, with no Chromium on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHROMIUM", "CHROMEDRIVER", "CI")}
    env.update(PATH=os.path.dirname(sys.executable), TEST_DATABASE_URL="postgresql:///unused", **extra_env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "tests/test_compose_file.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_in_ci_a_missing_chromium_fails_the_run_and_says_how_to_install_it():
    result = run_pytest_without_chromium(CI="true")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CI=true but no Chromium" in result.stdout + result.stderr
    assert "apt-get install chromium chromium-driver" in result.stdout + result.stderr


def test_outside_ci_a_missing_chromium_is_said_in_the_header_and_the_rest_runs():
    result = run_pytest_without_chromium()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "browser tests: NOT RUN, no Chromium found (apt-get install chromium chromium-driver" in result.stdout
