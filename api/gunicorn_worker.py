"""The gunicorn worker the API runs in: gevent, with three changes.

- Fair turns: a keep-alive connection whose next request has already arrived
  would otherwise be served again and again before any other greenlet runs
  (gevent switches only when a socket would block); measured with wrk, that
  put /healthz's p99 at 100-170 ms with 4 connections. Each request now ends
  with a yield to the hub: p99 12-18 ms.
- JSON errors from gunicorn itself: a request line with raw non-ASCII bytes,
  one over limit_request_line, malformed headers are refused by gunicorn's
  parser before Flask sees them, and gunicorn writes those answers as HTML.
  Here they are {"msg": ...} like every other answer of the API.
- SIGTERM: requests waiting on ?wait= answer "pending" (202) at once and
  their connections are closed, so shutting down does not keep them, or cut
  them off, for graceful_timeout. (An idle keep-alive connection still holds
  the worker for up to `keepalive` seconds, as in gunicorn's own worker.)

Configured in api/gunicorn.conf.py (worker_class).
"""

from __future__ import annotations

import json

import gevent
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error, answering JSON instead of an HTML page."""
    body = json.dumps({"msg": f"{reason.lower()}: {mesg}"}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


# gunicorn's workers call util.write_error for the requests its parser refuses.
util.write_error = write_json_error


class ApiWorker(GeventWorker):
    def handle_request(self, listener_name, req, sock, addr):
        try:
            handled = super().handle_request(listener_name, req, sock, addr)
        finally:
            gevent.sleep(0)  # let the other connections have their turn
        if not self.alive:
            raise StopIteration()  # stopping: close this connection now, not after keepalive
        return handled

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        waiter = self._extension("result_waiter")
        if waiter is not None:
            gevent.spawn(waiter.release_all)

    def run(self):
        try:
            super().run()
        finally:
            for name in ("result_waiter", "pool"):
                extension = self._extension(name)
                if extension is not None:
                    extension.close()

    def _extension(self, name: str):
        # None before the app is loaded (a SIGTERM right after the fork).
        return getattr(getattr(self, "wsgi", None), "extensions", {}).get(name)
