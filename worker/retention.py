"""Bounded history: finished tasks older than RESULT_RETENTION are deleted.

Every Calculator calls tasks_maintenance() (sql/007_retention_counts_cancel.sql)
now and then; the database lets one session at a time do the work (an
advisory lock it tries, never waits for) and the others get -1 at once. One
call deletes at most BATCH rows, oldest first, in its own short transaction;
while it finds full batches the Calculator calls again on its next turn,
between claims and stores, so catching up with a long backlog never stalls
the queue and never holds many locks. The same call folds old outcome counter
buckets, so it runs with RESULT_RETENTION=0 (keep everything) too.
"""

from __future__ import annotations

import logging

import psycopg

from core.database import error_summary
from core.settings import CalculatorSettings

log = logging.getLogger("calculator.retention")

BATCH = 2000               # rows per delete: a short transaction, few locks
INTERVAL_SECONDS = 5.0     # between calls when there is no backlog
RETRY_SECONDS = 60.0       # after an error other than a lost connection
MAINTENANCE = "SELECT tasks_maintenance(CASE WHEN %(keep)s > 0 THEN make_interval(secs => %(keep)s) END, %(batch)s)"


class Retention:
    def __init__(self, settings: CalculatorSettings):
        self.keep = settings.result_retention
        self.next_at = 0.0
        self.purged = 0  # since the last log line
        self.failing = False

    def maybe_run(self, conn: psycopg.Connection, now: float) -> None:
        """One batch if one is due. A lost connection propagates (the loop
        reconnects); any other database error is logged once and retried later."""
        if now < self.next_at:
            return
        try:
            deleted = conn.execute(MAINTENANCE, {"keep": self.keep, "batch": BATCH},
                                   prepare=True).fetchone()[0]
        except psycopg.OperationalError:
            raise
        except psycopg.Error as error:
            if not self.failing:
                log.error("retention failed (%s); retrying every %d s", error_summary(error),
                          RETRY_SECONDS)
            self.failing = True
            self.next_at = now + RETRY_SECONDS
            return
        if self.failing:
            log.info("retention works again")
            self.failing = False
        if deleted > 0:
            self.purged += deleted
        if deleted >= BATCH:
            self.next_at = now  # more to delete: again on the next turn
            return
        if self.purged:
            log.info("deleted %d finished tasks older than %g s", self.purged, self.keep)
            self.purged = 0
        self.next_at = now + INTERVAL_SECONDS
