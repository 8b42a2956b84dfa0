"""The wall-clock ceiling while the Calculator's loop is held up.

CALCULATION_TIMEOUT, CPU time, needs nobody: each child's CPU timer ends it
(evaluation.py). The wall-clock ceiling (CALCULATION_WALL_TIMEOUT) is the
loop's to keep (EvaluatorPool.enforce_timeouts), between database statements.
While it waits on one (a lock, a slow server, a reconnect), this thread,
armed for that time, kills a child whose task is past the ceiling, GRACE
seconds late at most. It only sends the signal and
marks the child: the loop, when it is back, finds the death and stores the
timeout error (EvaluatorPool._on_death). Disarming takes the same lock as a
look, so once the loop has disarmed it, the thread touches nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time

INTERVAL = 0.1  # how often it looks, while armed
GRACE = 0.2     # how late it may act after the loop would have


class TimeoutGuard:
    def __init__(self, pool):
        self.pool = pool
        self._lock = threading.Lock()
        self._armed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeout-guard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def arm(self, armed: bool) -> None:
        with self._lock:
            self._armed = armed

    def stop(self) -> None:
        self._stop.set()
        self.arm(False)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            with self._lock:
                if self._armed:
                    self._kill_runaways(time.monotonic())

    def _kill_runaways(self, now: float) -> None:
        for evaluator in self.pool.evaluators:
            running = evaluator.running()
            if running is not None and now - running[1] >= self.pool.wall_timeout + GRACE:
                evaluator.killed_by_guard = True
                try:
                    os.kill(evaluator.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
