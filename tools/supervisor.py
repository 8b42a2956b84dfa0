"""Keeps `make run`'s processes alive: one that dies is restarted after a
backoff (0.5 s, doubling up to 30 s, counted over the last minute) and the
restart is logged, in the terminal and in that process's own log. Only a
crash loop, MAX_EXITS exits of one process within WINDOW seconds, gives up,
with a message naming the log to read.

Each process runs in its own process group (Ctrl-C reaches `make run` only,
which stops them in order); when one dies, what is left of its group (the
API's gunicorn workers, a Calculator's evaluation processes) is killed with
it, so nothing orphaned holds a port or burns CPU.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MAX_EXITS = 5
WINDOW = 60.0
FIRST_DELAY = 0.5
MAX_DELAY = 30.0


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when `make run` dies, even by
    SIGKILL, so nothing it started outlives it holding the port."""
    if sys.platform.startswith("linux"):
        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before that
            os.kill(os.getpid(), signal.SIGTERM)


class CrashLoop(RuntimeError):
    pass


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict
    cwd: Path
    log_path: Path
    process: subprocess.Popen | None = None
    exits: deque = field(default_factory=deque)
    restart_at: float | None = None

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)

    def note(self, line: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"--- make run: {line}\n")

    def exited(self) -> bool:
        """Whether it has exited; its group is killed before it is reaped, so
        its process group id cannot have been reused."""
        if self.process is None or self.process.returncode is not None:
            return self.process is not None
        try:
            if os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return False
        except ChildProcessError:
            pass
        self.kill_group()
        self.process.wait()
        return True

    def kill_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Supervisor:
    def __init__(self, say: Callable[[str], None] = print, *, max_exits: int = MAX_EXITS,
                 window: float = WINDOW, first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY):
        self.say = say
        self.max_exits, self.window = max_exits, window
        self.first_delay, self.max_delay = first_delay, max_delay
        self.children: list[Child] = []

    def start(self, name: str, command: list[str], env: dict, cwd: Path, log_path: Path) -> Child:
        child = Child(name, command, env, cwd, log_path)
        child.spawn()
        self.children.append(child)
        return child

    def check(self) -> None:
        """Restart what died and is due; raise CrashLoop for a crash loop."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    child.spawn()
                    self.say(f"{child.name} restarted (pid {child.process.pid})")
                    child.note(f"restarted (pid {child.process.pid})")
                continue
            if not child.exited():
                continue
            how = describe_exit(child.process.returncode)
            child.exits.append(now)
            while child.exits and child.exits[0] < now - self.window:
                child.exits.popleft()
            if len(child.exits) >= self.max_exits:
                child.note(f"{how}; {len(child.exits)} exits in {self.window:g} s: not restarted")
                raise CrashLoop(f"{child.name} {how}, its {len(child.exits)}th exit in "
                                f"{self.window:g} s: stopping everything; see {child.log_path}")
            delay = min(self.max_delay, self.first_delay * 2 ** (len(child.exits) - 1))
            child.restart_at = now + delay
            self.say(f"{child.name} {how}; restarting it in {delay:g} s (log: {child.log_path})")
            child.note(f"{how}; restarting in {delay:g} s")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to each (the last started first), then wait; SIGKILL what is
        left. A group is killed before its leader is reaped, never after."""
        running = [c for c in reversed(self.children) if c.process and c.process.returncode is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running and time.monotonic() < deadline:
            running = [c for c in running if not c.exited()]
            time.sleep(0.05)
        for child in running:
            self.say(f"{child.name} did not stop in {timeout:g} s; killing it")
            child.kill_group()
            child.process.wait()
