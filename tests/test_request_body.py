"""How a request body is read: over MAX_CONTENT_LENGTH is 413
whether it comes with Content-Length or chunked (Werkzeug cut a chunked one at
the limit, answered 400 "malformed JSON"), and a charset other than UTF-8 is
refused (415) rather than read as UTF-8. Under both servers the API meets:
Werkzeug's (tests) and gunicorn (production)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from core.settings import ApiSettings
from tests.support import ApiServer
from tests.test_auth import serve

LIMIT = 2000


def post(base: str, path: str, body: bytes, chunked: bool, content_type="application/json"):
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        if chunked:
            # http.client sends an iterable body with Transfer-Encoding: chunked.
            pieces = [body[i:i + 700] for i in range(0, len(body), 700)]
            conn.request("POST", path, body=iter(pieces), encode_chunked=True,
                         headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"})
        else:
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def bodies():
    """(fits, too large): a submission of LIMIT - 100 bytes, and one of LIMIT + 100."""
    def of_size(size):
        head = b'{"expression": "1'
        return head + b"+1" * ((size - len(head) - 2) // 2) + b'"}'
    return of_size(LIMIT - 100), of_size(LIMIT + 100)


@pytest.fixture(scope="module")
def gunicorn(api_url, tmp_path_factory):
    server = ApiServer(api_url, tmp_path_factory.mktemp("gunicorn") / "api.log", max_content_length=LIMIT)
    yield server.base
    server.stop()


@pytest.fixture
def werkzeug(api_url, db):
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True,
                      "SETTINGS": ApiSettings.from_env({"MAX_CONTENT_LENGTH": str(LIMIT)})})
    with serve(app) as base:
        yield base
    app.extensions["result_waiter"].close()
    app.extensions["pool"].close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("server", ["werkzeug", "gunicorn"])
def test_a_body_over_the_limit_is_413_with_or_without_chunking(request, db, server, chunked):
    base = request.getfixturevalue(server)
    fits, too_large = bodies()
    for path in ("/api/expression", "/api/results/cancel"):
        status, answer = post(base, path, too_large, chunked)
        assert (status, answer["msg"]) == (413, f"request body too large: the limit is {LIMIT} bytes"), path
    status, answer = post(base, "/api/expression", fits, chunked)
    assert status == 202, answer
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1


@pytest.mark.parametrize("content_type", ["application/json; charset=latin1", "application/json;charset=ISO-8859-1",
                                          "application/json; charset=utf-16"])
def test_a_charset_other_than_utf8_is_refused(client, db, content_type):
    body = '{"expression": "2+2"}'.encode("latin1")
    response = client.post("/api/expression", data=body, headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert "must be UTF-8" in response.json["msg"] and "charset=" in response.json["msg"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/json; charset=UTF8", 'application/json; charset="UTF-8"'])
def test_utf8_is_accepted_however_it_is_named(client, db, content_type):
    response = client.post("/api/expression", data='{"expression": "2+2"}', headers={"Content-Type": content_type})
    assert response.status_code == 202, response.json
