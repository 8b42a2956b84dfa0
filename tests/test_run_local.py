"""make run, for real: PostgreSQL on a kept data directory, migrations, the
API and a Calculator under the supervisor; the README's example; a killed
Calculator and a killed API are restarted and the run goes on; SIGTERM stops
everything and a second run finds the first one's results; a SIGKILLed run
takes its processes with it; make reset wipes the data (and the PostgreSQL a
killed run left); DATABASE_URL wins over a local server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.conftest import create_database
from tests.http_client import post_json, request
from tests.support import ROOT, wait_for
from tools.pgcluster import free_port


class Run:
    """`python -m tools.run_local` with its output collected as it comes."""

    def __init__(self, run_dir: Path, port: int, **extra: str):
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("PG") and k not in ("PG", "PG_BINDIR")) and k != "DATABASE_URL"}
        env.update(PORT=str(port), CALCULATORS="1", RUN_DIR=str(run_dir), PYTHONPATH=str(ROOT), **extra)
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen([sys.executable, "-m", "tools.run_local"], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: text in self.output or self.process.poll() is not None, timeout,
                 message=f"{text!r} from make run")
        assert text in self.output, self.output

    def child_pid(self, marker: str) -> int:
        """The pid of the supervised process whose command line has marker."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for pid in map(int, children):
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"):
                    return pid
            except FileNotFoundError:
                continue
        raise AssertionError(f"no {marker} process under make run")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(60)
        self._reader.join(10)
        return code


@pytest.fixture
def run_dir():
    """A run directory PostgreSQL's user can reach when we are root (pytest's
    tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="calculator-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _serving(base: str) -> bool:
    try:
        return request(base, "GET", "/readyz", timeout=1)[0] == 200
    except OSError:
        return False


def _result(base: str, expression_id: int):
    """The outcome, waited for (a restarted Calculator may take a while to start on a busy machine)."""
    def outcome():
        status, _, body = request(base, "GET", f"/api/result/{expression_id}?wait=5")
        return body if status == 200 else None
    return wait_for(outcome, timeout=60, message=f"the result of {expression_id}")["result"]


def test_make_run_restarts_what_dies_and_keeps_its_data(run_dir):
    first = Run(run_dir, free_port())
    try:
        first.wait_for_line("Ctrl-C stops everything")
        banner = first.output
        assert first.base in banner and "psql" in banner and "logs" in banner, banner
        assert f"web page     {first.base}/" in banner, banner
        assert "PostgreSQL 1" in banner and "a new database" in banner and "make reset" in banner, banner
        status, _, body = post_json(first.base, "/api/expression",
                                    {"expression": "x*t**y", "variables": {"x": 10, "y": 1, "t": 11}})
        assert status == 202
        first_id = body["expression_id"]
        assert _result(first.base, first_id) == 110

        second = Run(run_dir, free_port())
        assert second.process.wait(60) == 1, second.output
        second.stop()
        assert "already running" in second.output, second.output

        os.kill(first.child_pid("worker"), signal.SIGKILL)
        first.wait_for_line("calculator-1 was killed by SIGKILL; restarting it in")
        first.wait_for_line("calculator-1 restarted")
        os.kill(first.child_pid("gunicorn"), signal.SIGKILL)
        first.wait_for_line("api was killed by SIGKILL; restarting it in")
        wait_for(lambda: _serving(first.base), timeout=60, interval=0.2, message="the restarted API")
        status, _, body = post_json(first.base, "/api/expression", {"expression": "2+2"})
        assert status == 202 and _result(first.base, body["expression_id"]) == 4
        assert first.process.poll() is None, first.output
        assert "restarted" in (run_dir / "logs" / "calculator-1.log").read_text()
    finally:
        code = first.stop(signal.SIGTERM)
    assert code == 0, first.output
    assert not _serving(first.base)
    assert not (run_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL was shut down"

    again = Run(run_dir, free_port())
    try:
        again.wait_for_line("Ctrl-C stops everything")
        assert "kept from earlier runs, 2 tasks" in again.output, again.output
        assert _result(again.base, first_id) == 110
        busy = subprocess.run([sys.executable, "-m", "tools.run_local", "--reset"], cwd=ROOT, timeout=60,
                              env=dict(os.environ, RUN_DIR=str(run_dir)), capture_output=True, text=True)
        assert busy.returncode == 1 and "already running" in busy.stderr
    finally:
        # Killed outright: what it started goes with it; its PostgreSQL is left to make reset.
        assert again.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: not _serving(again.base), timeout=20, message="the API to die with make run")
    wiped = subprocess.run([sys.executable, "-m", "tools.run_local", "--reset"], cwd=ROOT, timeout=60,
                           env=dict(os.environ, RUN_DIR=str(run_dir)), capture_output=True, text=True)
    assert wiped.returncode == 0 and "removed" in wiped.stdout, wiped.stdout + wiped.stderr
    assert not (run_dir / "pgdata").exists()
    assert not _postgres_on(run_dir / "pgdata")


def _postgres_on(data_dir: Path) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(data_dir) in cmdline.read_bytes().decode(errors="replace").split("\0"):
                return True
        except OSError:
            continue
    return False


def test_database_url_wins_over_a_local_server(run_dir, server_url):
    run = Run(run_dir, free_port(), DATABASE_URL=create_database(server_url, "calculator_run"))
    try:
        run.wait_for_line("Ctrl-C stops everything")
        assert "at DATABASE_URL" in run.output, run.output
        assert not (run_dir / "pgdata").exists()
    finally:
        assert run.stop() == 0, run.output
