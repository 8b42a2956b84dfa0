"""Where a Calculator's claim starts walking the queue (the claim frontier).

The claim (sql/queries/claim_tasks.sql) walks the index of pending tasks
in fair order. Beside a held snapshot (pg_dump, a long report, a client
idle in transaction) that index keeps an entry for every task finished
since the snapshot began, all of them before the queue's head: a walk from
the index's head visits each of them on every claim, and the queue slows
down as the history since the snapshot grows. So a claim starts just past
the place of the last task this Calculator claimed: a B-tree range scan
that starts there never visits what is before it.

What can become claimable behind the frontier, and how it is found:

- new tasks of a key: they are placed at the queue's head or later
  (next_fair_round() in sql/011), and their tasks_inserted notification
  says the earliest place given out; every Calculator that hears it moves
  its frontier back to there (heard()). Rows without an owner are placed
  by their id, past every claim: their notification says nothing;
- a task handed back (its lease ended at once): release_tasks.sql names
  its place in the notification in the same way;
- an expired lease (its Calculator died or froze), a task a claim skipped
  while another session held it locked and then let go, a task whose
  process_at was set in the future by psql, a row inserted by psql with a
  fair_round of its own: found by a walk from the head, at most every
  FULL_WALK_SECONDS, and never taking more than 1/FULL_WALK_SHARE of the
  time (a walk that took 30 ms waits 600 ms before the next); and after a
  reconnection, when notifications may have been missed.

Nothing else changes: the claim is the same statement, SKIP LOCKED and the
lease are the same, only where its walk starts moves. A task whose lease
ran out waits up to one more full walk's interval.
"""

from __future__ import annotations

from typing import Iterable

# The walk's start when it starts at the head: before every place.
HEAD = (-(2**63), -(2**63))
FULL_WALK_SECONDS = 1.0
FULL_WALK_SHARE = 20  # a walk from the head takes at most 1/20 of the time


class ClaimFrontier:
    def __init__(self) -> None:
        self.after: tuple[int, int] | None = None  # None: walk from the head next
        self.next_full_walk = 0.0

    def start(self, now: float) -> tuple[int, int]:
        """Where the next claim starts: (place, id) to walk past."""
        if self.after is None or now >= self.next_full_walk:
            return HEAD
        return self.after

    def claimed(self, start: tuple[int, int], places: Iterable[tuple[int, int]],
                now: float, seconds: float) -> None:
        """A claim that started at start took tasks at places (place, id),
        in seconds."""
        last = max(places, default=None)
        if start == HEAD:
            self.next_full_walk = now + max(FULL_WALK_SECONDS, seconds * FULL_WALK_SHARE)
            self.after = last if last is not None else self.after
        elif last is not None:
            self.after = max(self.after, last) if self.after is not None else last

    def lower(self, place: tuple[int, int] | None) -> None:
        """Tasks became claimable at place (None: somewhere unknown): the next
        claim starts before it."""
        if self.after is None:
            return
        if place is None:
            self.after = None
        else:
            self.after = min(self.after, (place[0], place[1] - 1))

    def heard(self, payload: str) -> None:
        """A tasks_inserted notification: '' for rows placed past every claim,
        'place' or 'place,id' for tasks placed there (sql/011,
        release_tasks.sql); anything else, from anyone who may NOTIFY, is
        taken as "somewhere unknown"."""
        if not payload:
            return
        try:
            parts = [int(part) for part in payload.split(",")]
        except ValueError:
            parts = []
        if len(parts) == 1:
            self.lower((parts[0], HEAD[1] + 1))
        elif len(parts) == 2:
            self.lower((parts[0], parts[1]))
        else:
            self.lower(None)
