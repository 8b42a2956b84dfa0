"""One evaluation process, seen from the parent: its pipe, its progress in
shared memory, the chunk it was sent (worker/evaluators.py drives them)."""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import Connection

from core.settings import CalculatorSettings
from worker.evaluation import CPU_AT, CUTOFF, PROGRESS_SLOTS, STARTED, STARTED_AT, run_child
from worker.task_queue import Task

EXIT_WAIT = 1.0  # seconds to wait for a child whose pipe closed to be gone
_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/PID/stat's CPU times


class Evaluator:
    """One child process and what it has been sent."""

    def __init__(self, context, settings: CalculatorSettings, number: int):
        self.number = number
        self.progress = context.RawArray("d", PROGRESS_SLOTS)
        self.progress[STARTED] = -1
        parent_end, child_end = context.Pipe()
        self.process = context.Process(
            target=run_child, name=f"evaluator-{number}", daemon=True,
            args=(child_end, self.progress, settings.limits, settings.memory_limit_mb,
                  settings.calculation_timeout))
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.chunk: list[Task] = []
        self.unanswered: dict[int, Task] = {}
        self.busy = False
        self.sent_at = 0.0  # when the chunk was sent (time.monotonic())
        self.killed_by_guard = False  # SIGKILLed by the guard thread past the wall-clock ceiling

    def send(self, tasks: list[Task]) -> None:
        """Raises OSError if the child is gone (its tasks are then unanswered)."""
        self.chunk = tasks
        self.unanswered = {t.id: t for t in tasks}
        self.progress[STARTED] = -1
        self.progress[CUTOFF] = len(tasks)
        self.busy = True
        self.sent_at = time.monotonic()
        self.conn.send([(t.id, t.expression, t.variables) for t in tasks])

    def running(self) -> tuple[Task, float] | None:
        """The task being calculated and since when, if any."""
        # Index first, start time second (the child writes them the other way
        # round): the start time read is then never older than the index's task.
        index = int(self.progress[STARTED])
        started_at = self.progress[STARTED_AT]
        if not self.busy or index < 0 or index >= len(self.chunk):
            return None
        return self.chunk[index], started_at

    def cpu_seconds_of_running(self, started_at: float, now: float) -> float:
        """The CPU seconds the task running since started_at has used so far
        (from /proc; where there is none, the wall-clock seconds)."""
        cpu_at = self.progress[CPU_AT]
        try:
            with open(f"/proc/{self.process.pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return max(0.0, now - started_at)
        used = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
        return max(0.0, used - cpu_at)

    def take_back_unstarted(self, after_index: int) -> list[Task]:
        """Tell the child not to start tasks after after_index; return them."""
        self.progress[CUTOFF] = after_index + 1
        taken = [t for t in self.chunk[after_index + 1:] if t.id in self.unanswered]
        for task in taken:
            del self.unanswered[task.id]
        return taken

    def exit_signal(self) -> int | None:
        """The signal that ended the child (None: alive, or it exited). Only
        for a child known to be ending (its pipe closed): waits for it."""
        self.process.join(EXIT_WAIT)
        code = self.process.exitcode
        return -code if code is not None and code < 0 else None

    def kill(self) -> None:
        if self.process.exitcode is None:  # never signal a reaped (maybe reused) pid
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.join()
        if not self.conn.closed:
            self.conn.close()
