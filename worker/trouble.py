"""A recurring failure, survived: logged once when it starts (and again only
if it changes), once when it ends, and retried with capped backoff."""

from __future__ import annotations

import logging
import time

from core.database import error_summary


class Trouble:
    def __init__(self, log: logging.Logger, what: str, first: float = 0.05, most: float = 1.0):
        self.log, self.what, self.first, self.most = log, what, first, most
        self.since: float | None = None
        self.failures = 0
        self.retry_at = 0.0
        self._delay = first
        self._last = ""

    def failed(self, error: BaseException, *, traceback: bool = False) -> None:
        now = time.monotonic()
        summary = f"{type(error).__name__}: {error_summary(error)}"
        if self.since is None or summary != self._last:
            self.log.error("%s failed (%s); retrying with backoff", self.what, summary,
                           exc_info=error if traceback else None)
        if self.since is None:
            self.since = now
        self._last = summary
        self.failures += 1
        self.retry_at = now + self._delay
        self._delay = min(self._delay * 2, self.most)

    def succeeded(self) -> None:
        if self.since is not None:
            self.log.info("%s works again after %.1f s (%d failures)", self.what,
                          time.monotonic() - self.since, self.failures)
        self.since, self.failures, self.retry_at, self._delay, self._last = None, 0, 0.0, self.first, ""

    @property
    def failing(self) -> bool:
        return self.since is not None

    def ready(self, now: float) -> bool:
        return now >= self.retry_at
