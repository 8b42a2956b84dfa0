"""At most MAX_RUNNING_PER_KEY of one key's tasks evaluating at once, across
every Calculator.

Each key has that many running slots, session-level advisory locks of the
Calculator's work session (sql/018_running_slots_per_key.sql): the lock
manager gives each to one session at a time, and they are free again the
moment the session ends. An evaluation process starts a key's tasks only
while the Calculator holds a slot of the key for it; the slot is kept while
the process is on the key's tasks, passed on to the next of the key's
queued tasks here, and given back when none waits. Rows without an owner
are not capped (they are no key's).

Before each claim the Calculator takes the slots its queued tasks can use
now and gives back those nothing uses (one statement each, only when
something changes). A key whose slots are all held elsewhere waits: its
tasks are skipped by the claims for RETRY_SECONDS, after which it tries
again, and the tasks of it queued here go back to the database after the
hold time like any that cannot start.
"""

from __future__ import annotations

import psycopg

RETRY_SECONDS = 0.2

TAKE = """
    SELECT w.owner, take_running_slots(w.owner, %(cap)s, w.wanted, w.held::integer[])
    FROM unnest(%(owners)s::bigint[], %(wanted)s::integer[], %(held)s::text[]) AS w(owner, wanted, held)
"""
GIVE_BACK = """
    SELECT release_running_slots(g.owner, g.slots::integer[])
    FROM unnest(%(owners)s::bigint[], %(slots)s::text[]) AS g(owner, slots)
"""


def _array(slots) -> str:
    return "{" + ",".join(str(s) for s in sorted(slots)) + "}"


class RunningCap:
    def __init__(self, cap: int):
        self.cap = cap
        self.held: dict[int, set[int]] = {}      # owner -> the slots this session holds
        self.retry_at: dict[int, float] = {}  # owner -> when to try for more of its slots again

    def capped(self, owner) -> bool:
        return self.cap > 0 and owner is not None

    def may_start(self, owner, in_use: dict) -> bool:
        """Whether one more process may take owner's tasks (in_use: per
        owner, the processes on its tasks here)."""
        return not self.capped(owner) or in_use.get(owner, 0) < len(self.held.get(owner, ()))

    def waiting(self) -> set:
        """The keys whose slots are all held elsewhere (none here): claims skip them."""
        return {owner for owner in self.retry_at if owner not in self.held}

    def next_try(self) -> float | None:
        return min(self.retry_at.values(), default=None)

    def sync(self, conn: psycopg.Connection, queued: dict, in_use: dict, idle: int, now: float) -> None:
        """Give back the slots nothing here uses, take those the queued tasks
        (queued: per owner, how many) can use now (idle: processes free)."""
        if self.cap <= 0:
            return
        give_back = {}
        for owner, slots in self.held.items():
            extra = len(slots) - (in_use.get(owner, 0) + min(queued.get(owner, 0), idle))
            if extra > 0:
                give_back[owner] = sorted(slots)[-extra:]
        if give_back:
            conn.execute(GIVE_BACK, {"owners": list(give_back),
                                     "slots": [_array(s) for s in give_back.values()]})
            for owner, slots in give_back.items():
                self.held[owner].difference_update(slots)
                if not self.held[owner]:
                    del self.held[owner]
        for owner in [o for o, at in self.retry_at.items() if at <= now or o not in queued]:
            del self.retry_at[owner]
        wanted = {}
        for owner, count in queued.items():
            if not self.capped(owner) or owner in self.retry_at:
                continue
            want = min(self.cap, in_use.get(owner, 0) + min(count, idle)) - len(self.held.get(owner, ()))
            if want > 0:
                wanted[owner] = want
        if not wanted:
            return
        rows = conn.execute(TAKE, {"cap": self.cap, "owners": list(wanted), "wanted": list(wanted.values()),
                                   "held": [_array(self.held.get(o, ())) for o in wanted]}).fetchall()
        for owner, taken in rows:
            if taken:
                self.held.setdefault(owner, set()).update(taken)
            if len(taken or ()) < wanted[owner]:
                self.retry_at[owner] = now + RETRY_SECONDS

    def lost(self) -> None:
        """The session ended, and its slots with it."""
        self.held.clear()
        self.retry_at.clear()
