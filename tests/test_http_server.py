"""The API under its production server (gunicorn, api/gunicorn.conf.py, the
default configuration): a crowd of waiting clients, slow clients, gunicorn's
own refusals, SIGTERM."""

from __future__ import annotations

import http.client
import json
import selectors
import signal
import socket
import threading
import time

import pytest

from tests.http_client import request
from tests.support import ApiServer, insert, wait_for


# These tests prove that nobody waits behind the crowd by events (every
# request answered while the crowd is still unanswered, each within the
# client's timeout), not by latency figures: a loaded CI machine makes any
# sub-second bound flaky. The figures are measured by `make bench`
# (bench/http_load.py, BENCHMARKS.md).


@pytest.fixture(scope="module")
def server(api_url, tmp_path_factory):
    api = ApiServer(api_url, tmp_path_factory.mktemp("gunicorn") / "api.log")
    yield api
    api.stop()


def latencies_ms(base: str, method: str, paths: list[str], body: bytes | None = None,
                 count: int = 150) -> list[float]:
    """count requests one after another on one keep-alive connection."""
    host, port = base.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/json"}
    result = []
    try:
        for n in range(count):
            started = time.perf_counter()
            conn.request(method, paths[n % len(paths)], body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status < 500, response.status
            result.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return result


def open_crowd(base: str, path: str, count: int) -> list[socket.socket]:
    host, port = base.rsplit("/", 1)[1].split(":")
    crowd = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        crowd.append(s)
    return crowd


def read_all(crowd: list[socket.socket], timeout: float) -> list[bytes]:
    """Every socket's answer (until the full body), or fail after timeout."""
    selector = selectors.DefaultSelector()
    buffers = {s: b"" for s in crowd}
    for s in crowd:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    pending = set(crowd)
    while pending:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(pending)} of {len(crowd)} waiting clients got no answer"
        for key, _ in selector.select(left):
            data = key.fileobj.recv(65536)
            buffers[key.fileobj] += data
            head, _, body = buffers[key.fileobj].partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if not data or (length and len(body) >= length[0]):
                selector.unregister(key.fileobj)
                pending.discard(key.fileobj)
    return [buffers[s] for s in crowd]


def test_a_thousand_waiting_clients_do_not_slow_anyone_down(server, db):
    task_id = insert(db, "2+2")
    others = [insert(db, f"{i}") for i in range(1, 50)]
    crowd = open_crowd(server.base, f"/api/result/{task_id}?wait=30", 1000)
    try:
        # Every request of the crowd is in (the last one took its turn), and
        # none has been answered: they wait.
        wait_for(lambda: request(server.base, "GET", "/healthz", timeout=5)[0] == 200)
        selector = selectors.DefaultSelector()
        for s in crowd:
            selector.register(s, selectors.EVENT_READ)
        health = latencies_ms(server.base, "GET", ["/healthz"])
        posts = latencies_ms(server.base, "POST", ["/api/expression"], b'{"expression": "1+1"}')
        gets = latencies_ms(server.base, "GET", [f"/api/result/{i}" for i in others])
        # 450 requests answered one after another while all 1,000 still wait.
        assert (len(health), len(posts), len(gets)) == (150, 150, 150)
        assert selector.select(0) == [], "a waiting client was answered before its result"
        selector.close()
        db.execute("UPDATE tasks SET status = 'done', result = '4', finished_at = now() WHERE id = %s",
                   (task_id,))
        db.execute("SELECT pg_notify('results_stored', %s)", (str(task_id),))
        answers = read_all(crowd, timeout=30)
    finally:
        for s in crowd:
            s.close()
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b'"result":4}\n') for a in answers), \
        {a[:60] for a in answers}


def test_clients_trickling_their_headers_delay_no_one(server, db):
    host, port = server.base.rsplit("/", 1)[1].split(":")
    slow = [socket.create_connection((host, int(port))) for _ in range(50)]
    stop, started = threading.Event(), threading.Event()

    def trickle():
        n = 0
        while not stop.wait(0.2):
            n += 1
            for s in slow:
                try:
                    s.sendall(b"GET /healthz HTTP/1.1\r\n" if n == 1 else f"X-{n}: {n}\r\n".encode())
                except OSError:
                    pass
            if n == 2:
                started.set()  # every slow client has sent its request line and a header

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        assert started.wait(30), "the slow clients never started"
        health = latencies_ms(server.base, "GET", ["/healthz"], count=300)
        assert len(health) == 300, "answered one after another beside 50 slow clients"
        # And they do not hold their connections for ever: the header read
        # timeout (keepalive, 5 s) closes them.
        for s in slow:
            s.settimeout(15)
        closed = sum(1 for s in slow if _closed_by_server(s))
        assert closed == 50
    finally:
        stop.set()
        thread.join()
        for s in slow:
            s.close()


def _closed_by_server(s: socket.socket) -> bool:
    try:
        while True:
            if s.recv(65536) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("request_line, status", [
    (b"GET /api/result/\xff\xfe HTTP/1.1", 400),
    (b"GET /api/results?ids=" + b"1," * 5000 + b" HTTP/1.1", 414),
])
def test_what_gunicorn_refuses_itself_is_answered_in_json(server, request_line, status):
    host, port = server.base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request_line + b"\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_all([s], timeout=10)[0]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head
    assert b"Content-Type: application/json" in head
    assert isinstance(json.loads(body)["msg"], str)


def test_sigterm_answers_waiting_clients_and_exits(api_url, db, tmp_path):
    api = ApiServer(api_url, tmp_path / "api.log")
    task_id = insert(db, "2+2")
    crowd = open_crowd(api.base, f"/api/result/{task_id}?wait=30", 20)
    try:
        wait_for(lambda: request(api.base, "GET", "/healthz", timeout=5)[0] == 200)
        started = time.monotonic()
        api.process.send_signal(signal.SIGTERM)
        answers = read_all(crowd, timeout=10)
        assert all(a.startswith(b"HTTP/1.1 202") and b'"pending"' in a for a in answers)
        assert api.stop(timeout=10) == 0
        assert time.monotonic() - started < 4, "the waiting clients held the shutdown"
    finally:
        for s in crowd:
            s.close()
        if api.process.poll() is None:
            api.process.kill()
