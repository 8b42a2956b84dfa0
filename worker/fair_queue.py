"""The Calculator's local queue: claimed tasks not yet started, served fairly.

The database hands out tasks in fair order (keys take turns, sql/010); this
queue keeps that promise inside one Calculator, where a few runaways of one
key would otherwise hold every child while another key's quick tasks wait:

- a chunk for an idle child starts with the owner (None, rows without an
  owner, is one owner) that is least far on in virtual time (used: its
  evaluation seconds over its weight, the seconds of its running tasks so
  far counted: worker/fair_share.py), ties by the fewest tasks running on
  this Calculator's children, then by its lowest (fair_round, id). (By
  tasks running alone, a child freed by a key's runaway went to that key's
  next runaway whenever another key also had one running: the quick key
  moved one turn per timeout; by tasks running first, two keys of weights
  1 and 3 each kept one child of two);
- it continues with that owner's tasks in (fair_round, id) order, then with
  the next owners in the same priority order, but only with owners that
  have no more tasks running here than the first and are no further on in
  virtual time (within CONTINUE_SLACK_SECONDS): a chunk never carries a
  busier or heavier owner's task behind a lighter one's (the child would
  start it, perhaps a runaway, as soon as the quick ones are done, without
  the parent deciding again);
- a task put back (stall take-back, innocent tasks of a dead child) goes
  back to its place, and keeps the time it was first queued (Task.queued_at);
- overdue() takes out the tasks queued longer than the hold time, for the
  Calculator to hand back to the database.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

from worker.task_queue import Task

USAGE_DECAY_SECONDS = 10.0
CONTINUE_SLACK_SECONDS = 0.1
SLOW_TASK_SECONDS = 0.1  # an owner whose tasks lately took this long each is "slow"


class OwnerUsage:
    """Evaluation seconds and tasks per owner on this Calculator lately,
    both decaying over USAGE_DECAY_SECONDS: which owners are slow (the
    order itself is by virtual time, worker/fair_share.py)."""

    def __init__(self) -> None:
        self._owners: dict = {}  # owner -> (seconds, tasks, at)

    def charge(self, owner, seconds: float, now: float, tasks: int = 1) -> None:
        used, count, at = self._decayed(owner, now)
        self._owners[owner] = (used + max(0.0, seconds), count + tasks, now)
        if len(self._owners) > 10_000:  # forget those long quiet
            for key in [k for k, v in self._owners.items() if now - v[2] > 10 * USAGE_DECAY_SECONDS]:
                del self._owners[key]

    def slow(self, owner, now: float) -> bool:
        """Whether the owner's tasks lately took SLOW_TASK_SECONDS or more each."""
        per_task = self.seconds_per_task(owner, now)
        return per_task is not None and per_task >= SLOW_TASK_SECONDS

    def seconds_per_task(self, owner, now: float) -> float | None:
        """The owner's tasks' mean evaluation seconds lately (None: none lately)."""
        used, count, _ = self._decayed(owner, now)
        return used / count if count > 0 else None

    def _decayed(self, owner, now: float) -> tuple[float, float, float]:
        entry = self._owners.get(owner)
        if entry is None:
            return 0.0, 0.0, now
        used, count, at = entry
        factor = math.exp(min(0.0, at - now) / USAGE_DECAY_SECONDS)
        return used * factor, count * factor, now


def _no_use(owner) -> float:
    return 0.0


def _anyone(owner) -> bool:
    return True


CHUNK_UNLIMITED = 1 << 30  # an allowance that never limits a chunk


def _unlimited(owner) -> int:
    return CHUNK_UNLIMITED


NONE_ALLOWED = object()  # first_owner() when no owner may start now


def _key(task: Task) -> tuple[int, int]:
    return (task.fair_round, task.id)


def _descending(task: Task) -> tuple[int, int]:
    return (-task.fair_round, -task.id)


class FairQueue:
    def __init__(self) -> None:
        # Per owner, its tasks sorted by descending (fair_round, id): the
        # next one is at the end, so taking it is a pop().
        self._owners: dict[int | None, list[Task]] = {}
        self._count = 0
        self._oldest_bound = float("inf")  # <= every queued task's queued_at

    # --- contents -----------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Task]:
        for tasks in self._owners.values():
            yield from reversed(tasks)

    def owners(self) -> set:
        """The owners with tasks queued here."""
        return set(self._owners)

    def counts(self) -> dict:
        """Per owner, how many of its tasks are queued here."""
        return {owner: len(tasks) for owner, tasks in self._owners.items()}

    def add(self, tasks: list[Task], now: float) -> None:
        """Tasks to queue: newly claimed ones are queued since now; a task
        put back (taken back from a child, or left by a dead one) goes to its
        place and keeps the time it was first queued."""
        by_owner: dict = {}
        for task in tasks:
            if task.queued_at is None:
                task.queued_at = now
            self._oldest_bound = min(self._oldest_bound, task.queued_at)
            by_owner.setdefault(task.owner, []).append(task)
        for owner, group in by_owner.items():
            group.sort(key=_descending)
            queued = self._owners.get(owner)
            if not queued:
                self._owners[owner] = group
            elif _key(group[-1]) > _key(queued[0]):
                queued[:0] = group  # after all it holds: a claim, in fair order
            elif _key(group[0]) < _key(queued[-1]):
                queued.extend(group)  # before all it holds: tasks put back
            else:
                queued.extend(group)
                queued.sort(key=_descending)
        self._count += len(tasks)

    def take_all(self) -> list[Task]:
        taken = list(self)
        self._owners.clear()
        self._count = 0
        self._oldest_bound = float("inf")
        return taken

    def remove(self, ids: set[int]) -> None:
        """Drop the tasks with these ids (cancelled)."""
        for owner, tasks in list(self._owners.items()):
            kept = [t for t in tasks if t.id not in ids]
            if len(kept) != len(tasks):
                self._count -= len(tasks) - len(kept)
                self._set(owner, kept)

    def _set(self, owner, tasks: list[Task]) -> None:
        if tasks:
            self._owners[owner] = tasks
        else:
            self._owners.pop(owner, None)

    # --- the dispatch rule --------------------------------------------------

    def _order(self, running: dict, used: Callable, allowed: Callable) -> list:
        return sorted((o for o in self._owners if allowed(o)),
                      key=lambda o: (used(o), running.get(o, 0), _key(self._owners[o][-1])))

    def first_owner(self, running: dict, used: Callable = _no_use, allowed: Callable = _anyone) -> object:
        """The owner the next chunk starts with (None: no owner allowed, or
        the queue is empty); used(owner): its effective virtual time
        (worker/fair_share.py); allowed(owner): whether a process may start
        its tasks now (worker/running_cap.py)."""
        order = self._order(running, used, allowed)
        return order[0] if order else NONE_ALLOWED

    def next_chunk(self, size: int, running: dict, limit_of: Callable[[int], int],
                   used: Callable = _no_use, allowed: Callable = _anyone,
                   allowance: Callable = _unlimited) -> list[Task]:
        """Up to size tasks by the dispatch rule (see the module's doc);
        limit_of(id) is the largest chunk a task may go in (after children
        died before starting it); used(owner) its effective virtual time;
        only owners allowed(owner) (none: an empty chunk); at most
        allowance(owner) tasks of an owner (its fair share's room:
        fair_share.py, FairShare.room)."""
        order = self._order(running, used, allowed)
        if not order:
            return []
        first_running = running.get(order[0], 0)
        first_used = used(order[0])
        chunk: list[Task] = []
        for owner in order:
            if running.get(owner, 0) > first_running or used(owner) > first_used + CONTINUE_SLACK_SECONDS:
                break
            tasks = self._owners[owner]
            taken_before = len(chunk)
            room = max(1, allowance(owner))
            while tasks and len(chunk) < size and len(chunk) - taken_before < room:
                limit = limit_of(tasks[-1].id)
                if chunk and len(chunk) >= limit:
                    break
                chunk.append(tasks.pop())
                size = min(size, limit)
            if tasks:
                break  # the chunk is full, or its next task may not go with it, or the owner's room is used
            del self._owners[owner]
        self._count -= len(chunk)
        return chunk

    # --- hand-back ----------------------------------------------------------

    def next_overdue_at(self, hold: float) -> float | None:
        """When overdue() may next have something (a lower bound), or None."""
        return self._oldest_bound + hold if self._count else None

    def overdue(self, now: float, hold: float) -> list[Task]:
        """Take out the tasks queued for hold seconds or longer."""
        if not self._count or now < self._oldest_bound + hold:
            return []
        cutoff = now - hold
        taken: list[Task] = []
        for owner, tasks in list(self._owners.items()):
            kept = [t for t in tasks if t.queued_at > cutoff]
            if len(kept) != len(tasks):
                taken.extend(t for t in reversed(tasks) if t.queued_at <= cutoff)
                self._set(owner, kept)
        self._count -= len(taken)
        self._oldest_bound = min((t.queued_at for t in self), default=float("inf"))
        return taken
