"""Waiting for results without polling: GET /api/result/<id>?wait=S.

Each API process holds one LISTEN connection on results_stored (the
Calculator NOTIFYs the ids it stores) in a background thread (a greenlet
under gevent), and wakes the requests waiting on those ids. A waiting
request holds no database connection while it waits; it uses the pool only
to re-read its row when woken. While the listener is connected nothing else
wakes a waiter; when it loses its connection it wakes everyone, and until it
is back waiters re-read every RECHECK_SECONDS (a notification may be lost
meanwhile). On reconnecting it wakes everyone once more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict

import psycopg

from core.database import connect, error_summary

log = logging.getLogger("api.waiter")

CHANNEL = "results_stored"
RECHECK_SECONDS = 1.0


class ResultWaiter:
    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._waiting: dict[int, set[threading.Event]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self._pid = None
        self._stop = threading.Event()
        self.listening = False   # LISTENing now: notifications reach us
        self.released = False    # shutting down: waiters answer at once

    def register(self, task_id: int) -> threading.Event:
        self._ensure_listening()
        event = threading.Event()
        with self._lock:
            self._waiting[task_id].add(event)
        return event

    def unregister(self, task_id: int, event: threading.Event) -> None:
        with self._lock:
            events = self._waiting.get(task_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[task_id]

    def waiting_count(self) -> int:
        with self._lock:
            return sum(len(events) for events in self._waiting.values())

    def release_all(self) -> None:
        """The server is stopping: every waiter answers with what it has now."""
        self.released = True
        self._wake_all()

    def close(self) -> None:
        self._stop.set()
        self.release_all()
        if self._thread is not None:
            self._thread.join(5)

    def _ensure_listening(self) -> None:
        # Threads do not survive a fork: a gunicorn worker starts its own.
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._listen, name="result-waiter", daemon=True)
                self._thread.start()

    def _listen(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with connect(self.url, application_name="calculator-api-waiter",
                             connect_timeout=1) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    delay = 0.1
                    self._wake_all()  # anything stored while we were not listening
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            self._wake(notify.payload)
            except psycopg.OperationalError as error:
                if self.listening:
                    log.warning("result listener lost its connection (%s); waiters re-read "
                                "every %s s until it is back", error_summary(error), RECHECK_SECONDS)
                self.listening = False
                self._wake_all()
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
        self.listening = False

    def _wake(self, payload: str) -> None:
        if payload == "*":
            self._wake_all()
            return
        with self._lock:
            for part in payload.split(","):
                for event in self._waiting.get(int(part), ()):
                    event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiting.values():
                for event in events:
                    event.set()


def wait_for_outcome(waiter: ResultWaiter, task_id: int, seconds: float, read_outcome):
    """read_outcome() until it is no longer pending or seconds have passed."""
    deadline = time.monotonic() + seconds
    event = waiter.register(task_id)
    try:
        row = read_outcome()  # stored between the first read and register?
        while row is not None and row[0] == "pending" and not waiter.released:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event.wait(left if waiter.listening else min(left, RECHECK_SECONDS))
            if waiter.released:
                break
            event.clear()
            row = read_outcome()
        return row
    finally:
        waiter.unregister(task_id, event)
