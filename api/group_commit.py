"""Group commit: concurrent submissions of one API process share one
transaction, one commit and one NOTIFY (docs/design.md, "Group commit").

There is no batching window. A submission that finds no write in flight
writes at once, alone (a lone request is not delayed). Submissions that
arrive while a write is in flight queue up; when it ends, the first of them
writes the whole queue in one transaction, in one round trip (a pipeline).
So batches form only under load, and grow with it.

What a client sees does not change:
- submissions without limits (AUTH=off, no limit set) are one INSERT of all
  their items; each member gets its own ids, in its items' order;
- submissions under limits each run the same admitted INSERT as alone
  (sql/queries/insert_tasks_admitted.sql, admit_submission() of sql/010),
  one statement per member in one transaction, ordered by owner (two
  processes lock keys' buckets in the same order: no deadlock). A refusal is
  a row, not an error: the refused member gets its 429, the others their ids;
- if the batch's transaction fails for a reason other than the database
  being unreachable (a statement error), every member is written again on
  its own, so one member's error never becomes the others';
- the database unreachable: every member gets DatabaseUnavailable (503).
Submissions with an Idempotency-Key are not coalesced (api/expressions.py):
they keep their own transaction, as before.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import psycopg
from flask import current_app

from api import admission
from api.db import DatabaseUnavailable, connection, end_transaction, notify_failed, NOTIFY_TASKS_INSERTED
from core.database import load_query

log = logging.getLogger("api")

# Items one transaction writes at most; the rest wait for the next one.
MAX_BATCH_ITEMS = 5000
# A queued member waits at most this long for its batch (the writer's
# statements are bounded by DB_TIMEOUT, so this is only a safety net).
WAIT_FACTOR = 3


@dataclass(eq=False)
class Member:
    """One submission: its items, and for an admitted one the limit
    parameters of its caller (computed in its own request)."""

    items: list[tuple[str, str]]
    limits: dict | None = None          # admission._limit_parameters(...) or None: plain INSERT
    trace_context: str | None = None    # stored with its tasks (api/tracing.py), or None
    ids: list[int] | None = None
    error: BaseException | None = None
    lead: bool = False
    event: threading.Event = field(default_factory=threading.Event)

    @property
    def owner_order(self) -> int:
        return (self.limits["owner"] or 0) if self.limits else -1

    def outcome(self) -> list[int]:
        if self.error is not None:
            raise self.error
        assert self.ids is not None
        return self.ids


class GroupCommit:
    def __init__(self, timeout: float, enabled: bool = True):
        self.timeout = timeout
        self.enabled = enabled  # False: every submission writes alone, at once (to compare)
        self._lock = threading.Lock()
        self._busy = False
        self._queue: list[Member] = []
        # Figures for tests and the benchmark: transactions and members written.
        self.batches = 0
        self.members = 0

    def submit(self, member: Member) -> list[int]:
        """The member's ids, in its items' order; admission.Refused,
        DatabaseUnavailable or the statement's error otherwise."""
        if not self.enabled:
            write([member])
            return member.outcome()
        with self._lock:
            if self._busy:
                self._queue.append(member)
            else:
                self._busy = True
                member.lead = True
        if not member.lead:
            if not member.event.wait(self.timeout * WAIT_FACTOR):
                with self._lock:
                    if member in self._queue:
                        self._queue.remove(member)
                        raise DatabaseUnavailable("the submission waited too long for its turn to be written")
                member.event.wait()  # taken into a batch a moment ago: its outcome is coming
        if member.lead:
            self._lead(member)
        return member.outcome()

    def _lead(self, me: Member) -> None:
        with self._lock:
            batch, size = [me], len(me.items)
            while self._queue and size + len(self._queue[0].items) <= MAX_BATCH_ITEMS:
                size += len(self._queue[0].items)
                batch.append(self._queue.pop(0))
        try:
            write(batch)
        except BaseException as error:  # e.g. the greenlet killed: nobody waits forever
            for member in batch:
                if member.ids is None and member.error is None:
                    member.error = error
            raise
        finally:
            with self._lock:
                self.batches += 1
                self.members += len(batch)
                successor = self._queue.pop(0) if self._queue else None
                if successor is None:
                    self._busy = False
                else:
                    successor.lead = True
            for member in batch[1:]:
                member.event.set()
            if successor is not None:
                successor.event.set()


def write(batch: list[Member]) -> None:
    """Write the batch in one transaction; sets each member's ids or error."""
    try:
        with connection() as conn:
            try:
                _write_together(conn, batch)
                return
            except psycopg.OperationalError:
                raise
            except psycopg.Error as error:
                if len(batch) == 1:
                    batch[0].error = error
                    return
                log.info("a batch of %d submissions failed (%s); writing each on its own",
                         len(batch), str(error).splitlines()[0] if str(error) else type(error).__name__)
    except DatabaseUnavailable as error:
        for member in batch:
            member.error = error
        return
    for member in batch:
        member.ids = member.error = None
        write([member])


def _write_together(conn: psycopg.Connection, batch: list[Member]) -> None:
    one_sync = current_app.extensions["pool"].one_sync_per_round_trip
    plain = [m for m in batch if m.limits is None]
    admitted = sorted((m for m in batch if m.limits is not None), key=lambda m: m.owner_order)
    cursors = []
    inserted = False
    try:
        with conn.pipeline() as pipeline:
            plain_cursor = _send_plain(conn, plain) if plain else None
            for member in admitted:
                params = {"expressions": [e for e, _ in member.items],
                          "variables": [v for _, v in member.items],
                          "trace_context": member.trace_context} | member.limits
                cursors.append(conn.execute(load_query("insert_tasks_admitted"), params,
                                            prepare=True if len(member.items) == 1 else None))
            if one_sync:
                # Behind PgBouncer: in the inserts' transaction (one Sync; the
                # NOTIFY reads the session, which the next transaction may not have).
                conn.execute(NOTIFY_TASKS_INSERTED, prepare=True)
            else:
                end_transaction(pipeline)
                inserted = True
                conn.execute(NOTIFY_TASKS_INSERTED, prepare=True)
    except psycopg.Error as error:
        # An error after the INSERTs' results arrived is the NOTIFY's.
        if not inserted or any(c.pgresult is None for c in cursors) or (
                plain and plain_cursor.pgresult is None):
            raise
        notify_failed(error)
    if plain:
        ids = sorted(row[0] for row in plain_cursor.fetchall())
        start = 0
        for member in plain:
            member.ids = ids[start:start + len(member.items)]
            start += len(member.items)
    for member, cursor in zip(admitted, cursors):
        try:
            member.ids = admission.inserted_ids(cursor)
        except admission.Refused as refused:
            member.error = refused


def _send_plain(conn: psycopg.Connection, members: list[Member]) -> psycopg.Cursor:
    if len(members) == 1 and len(members[0].items) == 1:
        (expression, variables), = members[0].items
        return conn.execute(admission.INSERT_TASK, {"expression": expression, "variables": variables,
                                                    "trace_context": members[0].trace_context},
                            prepare=True)
    items = [item for member in members for item in member.items]
    return conn.execute(admission.INSERT_TASKS, {
        "expressions": [e for e, _ in items], "variables": [v for _, v in items],
        "trace_contexts": [member.trace_context for member in members for _ in member.items]})
