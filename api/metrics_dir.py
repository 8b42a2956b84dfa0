"""PROMETHEUS_MULTIPROC_DIR for a server of several processes (see
api/metrics.py). Standard library only, on purpose: prometheus-client picks
its multiprocess mode when it is first imported, so the server's master must
set the variable before anything imports it (gunicorn: on_starting in
api/gunicorn.conf.py; its workers inherit the variable and the choice)."""

from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_created: list[str] = []


def prepare_multiprocess_dir() -> str:
    """Make PROMETHEUS_MULTIPROC_DIR an empty directory (a fresh temporary
    one when unset), so that figures of an earlier run are not added in."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        if os.path.isdir(path):
            for name in os.listdir(path):
                if name.endswith(".db"):
                    os.unlink(os.path.join(path, name))
        else:
            os.makedirs(path)
    else:
        path = tempfile.mkdtemp(prefix="calculator-metrics-")
        os.environ[MULTIPROC_ENV] = path
        _created.append(path)
    return path


def remove_multiprocess_dir() -> None:
    """At the server's exit: remove the directory if prepare_multiprocess_dir made it."""
    while _created:
        shutil.rmtree(_created.pop(), ignore_errors=True)
