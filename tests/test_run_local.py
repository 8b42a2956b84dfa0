"""make run, for real: a throwaway PostgreSQL, migrations, the API and a
Calculator, the README's example, then Ctrl-C stops all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.http_client import post_json, request
from tests.support import ROOT, wait_for
from tools.pgcluster import free_port


def start_run(tmp_path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update(PORT=str(port), CALCULATORS="1", RUN_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tools.run_local"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_make_run_serves_the_readme_example_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    run = start_run(tmp_path, port)
    banner = []
    try:
        for line in run.stdout:
            banner.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(banner)
        assert f"http://127.0.0.1:{port}" in text and "psql" in text and "logs" in text, text
        base = f"http://127.0.0.1:{port}"
        status, _, body = post_json(base, "/api/expression",
                                    {"expression": "x*t**y", "variables": {"x": 10, "y": 1, "t": 11}})
        assert status == 202
        outcome = request(base, "GET", f"/api/result/{body['expression_id']}?wait=10")
        assert outcome[0] == 200 and outcome[2]["result"] == 110

        second = start_run(tmp_path, free_port())
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 1 and "already running" in output, output
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(60)
    assert run.returncode == 0
    wait_for(lambda: not _serving(f"http://127.0.0.1:{port}"), timeout=10, message="the API to stop")
    cluster_dir = next((line.split("postgres: ")[1].strip() for line in banner if "postgres: " in line), None)
    assert cluster_dir and not os.path.exists(cluster_dir), "the throwaway database was removed"


def _serving(base: str) -> bool:
    try:
        request(base, "GET", "/healthz", timeout=1)
        return True
    except OSError:
        return False
