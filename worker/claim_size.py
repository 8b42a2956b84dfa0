"""How many tasks a Calculator holds: no more than its children can start
within the hold time.

A task claimed but not started within HOLD seconds is handed back to the
database (worker/fair_queue.py, calculator.py), so that the fair claim order
decides again and an idle Calculator can take it. Claiming far more than the
children can start within the hold time would only churn claim and
hand-back; claiming too few would cost round trips on quick loads. So the
Calculator aims to hold

    NUM_PROCESSES + free children x HOLD / seconds per task

tasks, between NUM_PROCESSES and TASK_NUM, where "seconds per task" is the
children's recent mean (timeouts count as CALCULATION_TIMEOUT; a decaying
average over about DECAY_SECONDS, so a load that changes is followed within
seconds) and a free child is one not on a task that already ran past
STALL_SECONDS (it is probably a runaway: it will start nothing soon). Quick
loads (microseconds a task) claim TASK_NUM at once, as before; a runaway
load holds about one task per child.
"""

from __future__ import annotations

import math

from core.settings import CalculatorSettings

HOLD_MAX = 1.0
DECAY_SECONDS = 10.0


def hold_seconds(settings: CalculatorSettings) -> float:
    """How long a claimed task may wait unstarted before it is handed back:
    1 s, or half of CALCULATION_TIMEOUT if that is shorter (so that a task
    behind runaways goes back to the database before they time out)."""
    return min(HOLD_MAX, settings.calculation_timeout / 2)


class ClaimSize:
    def __init__(self, settings: CalculatorSettings):
        self.settings = settings
        self.hold = hold_seconds(settings)
        self._seconds = 0.0  # decayed sums of evaluation seconds and tasks
        self._tasks = 0.0
        self._at = 0.0

    def observe(self, seconds: float, now: float, tasks: int = 1) -> None:
        """tasks evaluated (or timed out) in seconds, all of them together."""
        if self._tasks and now > self._at:
            decay = math.exp((self._at - now) / DECAY_SECONDS)
            self._seconds *= decay
            self._tasks *= decay
        self._seconds += max(0.0, seconds)
        self._tasks += tasks
        self._at = max(self._at, now)

    def seconds_per_task(self) -> float | None:
        return self._seconds / self._tasks if self._tasks else None

    def target(self, free_children: int) -> int:
        """How many tasks to hold, running ones included."""
        floor = min(self.settings.num_processes, self.settings.task_num)
        if free_children <= 0:
            return floor  # every child is on a long task: none will start anything soon
        per_task = self.seconds_per_task()
        if per_task is None or per_task <= 0:
            return self.settings.task_num  # nothing known yet: as before
        starts = free_children * self.hold / per_task
        return max(floor, min(self.settings.task_num, self.settings.num_processes + math.floor(starts)))
