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

from core.database import connect, error_summary

log = logging.getLogger("api.waiter")

CHANNEL = "results_stored"
RECHECK_SECONDS = 1.0
# Also heard on the same connection, for api/auth.py's cache of keys.
KEYS_CHANNEL = "api_keys_changed"


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
        # Moves on every connect, disconnect and api_keys_changed: what was
        # read from api_keys under one generation is current while it lasts.
        self.keys_generation = 0

    def keys_unchanged_since(self, generation: int) -> bool:
        """Whether api_keys is known not to have changed since generation."""
        self._ensure_listening()
        return self.listening and self.keys_generation == generation

    def _keys_changed(self) -> None:
        with self._lock:
            self.keys_generation += 1

    def register(self, task_id: int, event: threading.Event | None = None) -> threading.Event:
        """An event set when task_id is stored (event: one shared by several ids)."""
        self._ensure_listening()
        event = event or threading.Event()
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
            # A request waiting on many ids holds one event for all of them.
            return len(set().union(*self._waiting.values()))

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
                    conn.execute(f"LISTEN {KEYS_CHANNEL}")
                    self._keys_changed()
                    self.listening = True
                    delay = 0.1
                    self._wake_all()  # anything stored while we were not listening
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            if notify.channel == KEYS_CHANNEL:
                                self._keys_changed()
                            else:
                                self._wake(notify.payload)
            except Exception as error:  # whatever happens, the listener goes on
                if self.listening:
                    log.warning("result listener failed (%s: %s); waiters fall back to "
                                "re-reading every %s s until it listens again", type(error).__name__,
                                error_summary(error), RECHECK_SECONDS)
                self.listening = False
                self._keys_changed()
                self._wake_all()
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
        self.listening = False

    def _wake(self, payload: str) -> None:
        """payload: the ids stored, comma-separated, or '*'. Anyone may NOTIFY
        this channel: a payload that is not a list of ids wakes everyone (they
        re-read their row; nothing worse)."""
        try:
            ids = [int(part) for part in payload.split(",")] if payload != "*" else None
        except ValueError:
            log.warning("unexpected payload on %s: %.40r; waking every waiter", CHANNEL, payload)
            ids = None
        if ids is None:
            self._wake_all()
            return
        with self._lock:
            for task_id in ids:
                for event in self._waiting.get(task_id, ()):
                    event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiting.values():
                for event in events:
                    event.set()


def wait_for_outcome(waiter: ResultWaiter, task_id: int, seconds: float, read_outcome):
    """read_outcome() until it is no longer pending or seconds have passed."""
    return wait_for_outcomes(waiter, [task_id], seconds, read_outcome,
                             lambda row: row is not None and row[0] == "pending")


def wait_for_outcomes(waiter: ResultWaiter, task_ids, seconds: float, read, still_pending):
    """read() until still_pending(what it read) is false or seconds have
    passed: one event, woken by the storing of any of task_ids."""
    deadline = time.monotonic() + seconds
    event = threading.Event()
    task_ids = set(task_ids)
    for task_id in task_ids:
        waiter.register(task_id, event)
    try:
        value = read()  # stored between the first read and register?
        while still_pending(value) and not waiter.released:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event.wait(left if waiter.listening else min(left, RECHECK_SECONDS))
            if waiter.released:
                break
            event.clear()
            value = read()
        return value
    finally:
        for task_id in task_ids:
            waiter.unregister(task_id, event)
