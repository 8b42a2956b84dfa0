"""Which tenants a Calculator holds, how far on each one is, and which may
start a task now (worker/evaluators.py's pool inherits it): what the fair
share (fair_share.py), the running cap (running_cap.py) and the claims
(claiming.py) ask of the evaluation processes.
"""

from __future__ import annotations

import math
import time

from worker.fair_queue import CHUNK_UNLIMITED, NONE_ALLOWED

RUNNING_SECONDS_CACHE = 0.02  # how old the running tasks' CPU seconds may be (fair_share.py)


class TenantsHere:
    def running_by_owner(self) -> dict:
        """How many children each owner has: the owner of the task each busy
        child is on (or will start first)."""
        running: dict = {}
        for evaluator in self.evaluators:
            if not evaluator.busy or not evaluator.unanswered:
                continue
            current = evaluator.running()
            task = current[0] if current and current[0].id in evaluator.unanswered \
                else next(iter(evaluator.unanswered.values()))
            running[task.owner] = running.get(task.owner, 0) + 1
        return running

    def running_seconds(self, now: float) -> dict:
        """Per tenant, the CPU seconds its running tasks have used so far
        (read from /proc at most every RUNNING_SECONDS_CACHE seconds)."""
        if now - self._running_seconds[0] < RUNNING_SECONDS_CACHE:
            return self._running_seconds[1]
        seconds: dict = {}
        for evaluator in self.evaluators:
            running = evaluator.running()
            if running is not None and running[0].id in evaluator.unanswered \
                    and now - running[1] >= RUNNING_SECONDS_CACHE:
                owner = running[0].owner
                seconds[owner] = seconds.get(owner, 0.0) + evaluator.cpu_seconds_of_running(running[1], now)
        self._running_seconds = (now, seconds)
        return seconds

    def present(self, now: float) -> dict:
        """The tenants with tasks here (queued or running), each with its
        effective virtual time (its running tasks' seconds so far counted)."""
        running = self.running_seconds(now)
        tenants = self.queue.owners() | set(running) | set(self.running_by_owner())
        self.fair.seen(tenants, now)
        return {t: self.fair.effective(t, running.get(t, 0.0), now) for t in tenants}

    def chunk_allowance(self, present: dict, now: float):
        """allowance(owner): how many of its tasks one chunk may carry, as
        many as fit in its fair share's room (fair_share.py, FairShare.room)
        at its tasks' recent seconds each (or the Calculator's, for an owner
        not seen lately). (A child runs its chunk without the
        Calculator deciding again: a chunk of 14 tasks of 0.1 s put one key
        1.4 s ahead, and two keys of weights 1 and 3 got 30 % and 70 %.)"""
        overall = self.claim_size.seconds_per_task()

        def allowance(owner) -> int:
            per_task = self.usage.seconds_per_task(owner, now) or overall
            if not per_task:
                return CHUNK_UNLIMITED
            return math.floor(self.fair.room(owner, present[owner], now) / per_task)  # next_chunk: at least one
        return allowance

    def ahead(self, now: float) -> set:
        """The tenants ahead of the others in evaluation time: the claims skip them."""
        return self.fair.ahead(self.present(now), now)

    def processes_by_owner(self) -> dict:
        """Per owner, the busy processes sent a chunk with a task of its
        (each holds one of the owner's running slots until it answers that
        it is done: a task taken back as the process started it may still be
        running there)."""
        counts: dict = {}
        for evaluator in self.evaluators:
            if evaluator.busy:
                for owner in {t.owner for t in evaluator.chunk}:
                    counts[owner] = counts.get(owner, 0) + 1
        return counts

    def sync_running_slots(self, conn, now: float) -> None:
        """MAX_RUNNING_PER_KEY: take the slots the queued tasks can use now,
        give back those nothing uses (worker/running_cap.py)."""
        self.cap.sync(conn, self.queue.counts(), self.processes_by_owner(), self.idle_count(), now)

    def idle_child_would_share(self) -> bool:
        """An idle child would get a task of an owner that already has a
        child here, or of an owner whose tasks lately were slow (its next
        may be another runaway), or nothing at all: the database may hold a
        task of another owner that should come first (claiming.py claims
        again)."""
        if not self.idle_count():
            return False
        if not self.queue:
            return True
        running = self.running_by_owner()
        now = time.monotonic()
        present = self.present(now)
        in_use = self.processes_by_owner()
        first = self.queue.first_owner(running, present.__getitem__, lambda o: self.cap.may_start(o, in_use))
        return first is NONE_ALLOWED or running.get(first, 0) > 0 or self.usage.slow(first, now) \
            or first in self.fair.ahead(present, now)
