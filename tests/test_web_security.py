"""The page and every state-changing request against other sites:
a host allow-list (DNS rebinding), an origin that is scheme, host and port,
and the headers that keep the page from being framed or sniffed."""

from __future__ import annotations

import pytest

from core.settings import ApiSettings, SettingsError

ROUTES = [("GET", "/"), ("GET", "/api/stats"), ("GET", "/api/result/1"), ("GET", "/healthz"),
          ("GET", "/metrics"), ("GET", "/api/openapi.json"), ("GET", "/no/such/route"),
          ("POST", "/api/expression"), ("POST", "/api/result/1/cancel")]


@pytest.mark.parametrize("method, path", ROUTES)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "localhost.evil.example",
                                  "127.0.0.2", "[::2]:5000", "local host", "localhost:port"])
def test_a_host_not_allowed_is_refused_on_every_route(client, db, method, path, host):
    response = client.open(path, method=method, json={"expression": "2+2"}, headers={"Host": host})
    assert response.status_code == 400
    assert response.is_json and "ALLOWED_HOSTS" in response.json["msg"], response.data
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


def test_a_dns_rebinding_page_cannot_submit_cancel_or_read(client, db):
    """The page's own name resolves to this server: Host and Origin agree, and
    are both the attacker's."""
    headers = {"Host": "evil.example:5000", "Origin": "http://evil.example:5000",
               "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/expression", json={"expression": "2+2"}, headers=headers).status_code == 400
    assert client.get("/dashboard/tasks", headers=headers).status_code == 400
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1:8080", "[::1]:5000", "LOCALHOST"])
def test_the_names_make_run_serves_on_are_allowed(client, db, host):
    assert client.get("/api/stats", headers={"Host": host}).status_code == 200


def test_allowed_hosts_is_a_setting(app, db):
    assert ApiSettings.from_env({}).allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert ApiSettings.from_env({"ALLOWED_HOSTS": "calc.example.org, [::1]"}).allowed_hosts == \
        ("calc.example.org", "::1")
    with pytest.raises(SettingsError, match="without ports"):
        ApiSettings.from_env({"ALLOWED_HOSTS": "calc.example.org:5000"})
    app.config["SETTINGS"] = ApiSettings.from_env({"ALLOWED_HOSTS": "calc.example.org"})
    client = app.test_client()
    assert client.get("/api/stats", headers={"Host": "calc.example.org"}).status_code == 200
    assert client.get("/api/stats", headers={"Host": "localhost"}).status_code == 400
    app.config["SETTINGS"] = ApiSettings.from_env({"ALLOWED_HOSTS": "*"})
    assert app.test_client().get("/api/stats", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("origin", [
    "https://localhost",          # another scheme: another origin
    "https://localhost:80",
    "http://localhost:8080",      # another port
    "http://localhost.:81",
    "http://[::1]",
    "http://localhost:notaport",
])
def test_an_origin_is_scheme_host_and_port(client, db, origin):
    response = client.post("/api/expression", json={"expression": "2+2"}, headers={"Origin": origin})
    assert response.status_code == 403, origin
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0


@pytest.mark.parametrize("origin, host", [
    ("http://localhost", "localhost"), ("http://localhost:80", "localhost"),
    ("http://LocalHost:5000", "localhost:5000"), ("http://[::1]:5000", "[::1]:5000"),
])
def test_the_same_origin_passes(client, db, origin, host):
    response = client.post("/api/expression", json={"expression": "2+2"},
                           headers={"Origin": origin, "Host": host})
    assert response.status_code == 202, response.json


@pytest.mark.parametrize("path, status", [("/", 200), ("/api/stats", 200), ("/api/result/99", 404),
                                          ("/dashboard/static/dashboard.js", 200)])
def test_every_answer_carries_the_security_headers(client, db, path, status):
    response = client.get(path)
    assert response.status_code == status
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
