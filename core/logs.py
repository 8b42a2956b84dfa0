"""Logging set-up shared by the API and the Calculator: one line per event
on stderr, as key=value text (LOG_FORMAT=text, the default) or JSON
(LOG_FORMAT=json), at LOG_LEVEL (default INFO)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(environ=os.environ) -> None:
    level = environ.get("LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    if environ.get("LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s level=%(levelname)s logger=%(name)s pid=%(process)d %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")


def format_ids(ids) -> str:
    """1,2,3,7 -> '1-3,7': task ids for a log line, short even for big batches."""
    ids = sorted(ids)
    parts = []
    start = previous = None
    for current in ids:
        if previous is not None and current == previous + 1:
            previous = current
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = current
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(parts)
