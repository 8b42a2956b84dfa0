"""The supervisor `make run` uses, with real processes and short delays: a
process that dies is restarted with a growing delay and the restart is
logged; what it left behind in its process group dies with it; a crash loop
ends with a message naming the log. (Under `make run` itself, with a
Calculator and the API SIGKILLed: test_run_local.py.)"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tests.support import wait_for
from tools.supervisor import CrashLoop, Supervisor


def supervisor(lines: list[str], **limits) -> Supervisor:
    return Supervisor(lines.append, **{"first_delay": 0.05, "window": 60.0, **limits})


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_crash_loop_ends_with_a_message_naming_the_log_after_growing_delays(tmp_path):
    lines: list[str] = []
    watched = supervisor(lines, max_exits=4)
    log = tmp_path / "calculator-1.log"
    watched.start("calculator-1", python("import sys; print('bad setting: X'); sys.exit(2)"),
                  dict(os.environ), tmp_path, log)

    def crash_loop():
        try:
            watched.check()
        except CrashLoop as error:
            return str(error)

    message = wait_for(crash_loop, timeout=30, interval=0.02, message="the crash loop")
    assert message == (f"calculator-1 exited with code 2, its 4th exit in 60 s: "
                       f"stopping everything; see {log}")
    delays = [line.split("restarting it in ")[1].split(" s")[0] for line in lines if "restarting it in" in line]
    assert delays == ["0.05", "0.1", "0.2"], lines
    assert sum("calculator-1 restarted (pid" in line for line in lines) == 3
    text = log.read_text()
    assert text.count("bad setting: X") == 4
    assert "--- make run: exited with code 2; restarting in 0.05 s" in text
    assert "not restarted" in text
    watched.stop()


def test_a_killed_process_is_restarted_and_its_leftovers_are_killed_with_it(tmp_path):
    lines: list[str] = []
    watched = supervisor(lines)
    # A parent with a child of its own, like gunicorn or a Calculator.
    child = watched.start("api", python("import subprocess, time; subprocess.Popen(['sleep', '300']); "
                                        "time.sleep(300)"), dict(os.environ), tmp_path, tmp_path / "api.log")
    first = child.process.pid
    children = Path(f"/proc/{first}/task/{first}/children")
    leftover = int(wait_for(lambda: children.read_text().split(), message="the grandchild")[0])
    os.kill(first, signal.SIGKILL)

    def restarted():
        watched.check()
        return child.process.pid != first and child.process.poll() is None

    wait_for(restarted, timeout=30, message="the restart")
    assert lines[0] == f"api was killed by SIGKILL; restarting it in 0.05 s (log: {tmp_path / 'api.log'})"
    assert lines[1] == f"api restarted (pid {child.process.pid})"
    wait_for(lambda: not _alive(leftover), timeout=10, message="the orphaned grandchild to die")
    watched.stop(timeout=5)
    assert child.process.returncode == -signal.SIGTERM


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_exits_older_than_the_window_do_not_count(tmp_path):
    lines: list[str] = []
    watched = supervisor(lines, max_exits=2, window=0.15, first_delay=0.2)
    watched.start("calculator-1", python("raise SystemExit(1)"), dict(os.environ), tmp_path,
                  tmp_path / "c.log")
    # Each exit is older than the window by the time of the next: never a crash
    # loop, and the delay does not grow.
    wait_for(lambda: watched.check() or sum("restarted" in line for line in lines) >= 6,
             timeout=30, interval=0.02, message="six restarts")
    assert all("restarting it in 0.2 s" in line for line in lines if "restarting" in line), lines
    watched.stop()
