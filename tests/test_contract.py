"""The service against its own OpenAPI document, by Schemathesis: every check
and every phase (examples, coverage, fuzzing, stateful), bounded, so the
document and the service cannot drift apart. Settings in tests/schemathesis.toml.

CONTRACT_EXAMPLES (default 10 per operation) and CONTRACT_SEED widen or vary
the run, e.g. CONTRACT_EXAMPLES=200 for a long one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import ApiSettings
from tests.support import ROOT


@pytest.fixture
def app(api_url, db):
    """The API with a 1-second RESULT_MAX_WAIT (the document it serves says
    so), so that ?wait= on tasks no Calculator runs keeps the run short."""
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True, "SETTINGS": ApiSettings(max_wait=1.0)})
    yield app
    app.extensions["result_waiter"].close()
    app.extensions["pool"].close()


def test_the_service_keeps_its_openapi_contract(http_server, tmp_path):
    run_schemathesis(http_server, tmp_path)


def test_the_service_keeps_its_contract_with_keys(api_url, db, tmp_path):
    """AUTH=required, as an admin key: what keys add (401, 403, 429,
    Retry-After) is documented too, and the security schemes are honoured."""
    from api import create_app
    from api.keys import create_key
    from tests.test_auth import serve
    key = create_key(db, "contract", admin=True)
    app = create_app({"DATABASE_URL": api_url, "TESTING": True,
                      "SETTINGS": ApiSettings.from_env({"AUTH": "required", "RESULT_MAX_WAIT": "1"})})
    try:
        with serve(app) as base:
            run_schemathesis(base, tmp_path, "--header", f"Authorization: Bearer {key}")
    finally:
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()


def run_schemathesis(http_server: str, tmp_path: Path, *extra: str) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
        "run", f"{http_server}/api/openapi.json", "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",  # why: tests/schemathesis.toml
        "--max-examples", os.environ.get("CONTRACT_EXAMPLES", "10"),
        "--seed", os.environ.get("CONTRACT_SEED", "1"), "--request-timeout", "10",
        "--no-color", "--report-dir", str(tmp_path), *extra,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    selected = re.search(r"Operations:\s+(\d+) selected", run.stdout)
    assert selected and f"Tested: {selected.group(1)}" in run.stdout, run.stdout[-3000:]
