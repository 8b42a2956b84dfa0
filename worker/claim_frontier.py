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

- new tasks: every INSERT's tasks_inserted notification says where the
  earliest of its rows stands (sql/011), and every Calculator that hears
  it moves its frontier back to there (heard()): a key's tasks placed at
  the queue's head, and rows without an owner whose transaction committed
  after one with a higher id had been claimed;
- a task handed back (its lease ended at once): release_tasks.sql names
  its place in the notification in the same way;
- an expired lease (its Calculator died or froze), a task a claim skipped
  while another session held it locked and then let go, a task whose
  process_at was set in the future by psql, anything missed while
  disconnected: found by a walk from the queue's head (the place of its
  oldest pending task, from the low-water mark queue_head() keeps in
  sql/011, so not from the index's head: what finished before the oldest
  pending task is not visited), at most every HEAD_WALK_SECONDS and never
  taking more than 1/HEAD_WALK_SHARE of the time (a walk that took 60 ms
  waits 1.2 s before the next), but at least every HEAD_WALK_MAX_SECONDS;
- a row psql inserted with a fair_round of its own before the queue's head,
  or whose place the low-water mark passed while its transaction was still
  open: found by a walk from the index's very head, every
  INDEX_WALK_SECONDS (beside a held snapshot, the one walk that visits the
  entries of every task finished since it began), after which the low-water
  mark is set to the oldest pending task (reset_queue_head(), sql/011).

Nothing else changes: the claim is the same statement, SKIP LOCKED and the
lease are the same, only where its walk starts moves. A task whose lease
ran out waits up to one more walk's interval.
"""

from __future__ import annotations

from typing import Iterable

# Where a walk starts: past (place, id), or at the queue's head (None: the
# claim asks queue_head()), or at the index's very head (HEAD).
HEAD = (-(2**63), -(2**63))
QUEUE_HEAD = None
HEAD_WALK_SECONDS = 1.0
HEAD_WALK_SHARE = 20  # walks from the queue's head take at most 1/20 of the time ...
HEAD_WALK_MAX_SECONDS = 2.0  # ... but come at least this often (a claim's time on a
# loaded machine is mostly waiting for a CPU, and an expired lease waits for the walk)
INDEX_WALK_SECONDS = 60.0


class ClaimFrontier:
    def __init__(self) -> None:
        self.after: tuple[int, int] | None = None  # None: walk from the queue's head next
        # Moved back by a notification since the last claim: the next claim
        # walks from there, whatever walk is due (the queue's head may have
        # passed a task whose transaction committed late: the low-water
        # mark is set back only by the walk from the index's head).
        self.lowered = False
        self.next_head_walk = 0.0
        self.next_index_walk = 0.0

    def start(self, now: float, polling: bool = False) -> tuple[int, int] | None:
        """Where the next claim starts: (place, id) to walk past, QUEUE_HEAD
        or HEAD. The fallback poll of an idle Calculator (polling: no
        notification came for QUEUE_WAIT_TIME) walks from the index's head:
        whatever was missed is found then, and an idle Calculator has the
        time."""
        if polling:
            return HEAD
        if self.lowered and self.after is not None:
            return self.after
        if now >= self.next_index_walk:
            return HEAD
        if self.after is None or now >= self.next_head_walk:
            return QUEUE_HEAD
        return self.after

    def claimed(self, start: tuple[int, int] | None, places: Iterable[tuple[int, int]],
                now: float, seconds: float) -> None:
        """A claim that started at start took tasks at places (place, id),
        in seconds."""
        last = max(places, default=None)
        self.lowered = False
        if start == HEAD:
            self.next_index_walk = now + max(INDEX_WALK_SECONDS, seconds * HEAD_WALK_SHARE)
        if start in (HEAD, QUEUE_HEAD):
            self.next_head_walk = now + min(max(HEAD_WALK_SECONDS, seconds * HEAD_WALK_SHARE),
                                            HEAD_WALK_MAX_SECONDS)
            self.after = last if last is not None else self.after
        elif last is not None:
            self.after = max(self.after, last) if self.after is not None else last

    def lower(self, place: tuple[int, int] | None) -> None:
        """Tasks became claimable at place (None: somewhere unknown): the next
        claim starts before it."""
        if place is None:
            self.after = None
            self.lowered = False
            return
        start = (place[0], max(place[1] - 1, HEAD[1]))
        # With nothing claimed yet (after None) too: the queue's head may
        # have passed the place, if the task's transaction committed late.
        self.after = start if self.after is None else min(self.after, start)
        self.lowered = True

    def heard(self, payload: str) -> None:
        """A tasks_inserted notification: 'place' for new tasks placed there
        or later (sql/011), 'place,id' for a task handed back there
        (release_tasks.sql), '' for nothing new; anything else, from anyone
        who may NOTIFY, is taken as "somewhere unknown"."""
        if not payload:
            return
        try:
            parts = [int(part) for part in payload.split(",")]
        except ValueError:
            parts = []
        if any(not HEAD[0] <= part <= -HEAD[0] - 1 for part in parts):
            parts = []  # past a bigint: nothing the service sends
        if len(parts) == 1:
            self.lower((parts[0], HEAD[1] + 1))
        elif len(parts) == 2:
            self.lower((parts[0], parts[1]))
        else:
            self.lower(None)
