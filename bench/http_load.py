"""The API under load: gunicorn with the production config, wrk on loopback
(keep-alive connections), and the same server config serving a trivial Flask
endpoint as the ceiling; pgbench's single-row INSERT rate as the database's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from bench.common import JOB, JOB_VARIABLES, WORKDIR
from tests.http_client import answers
from tests.support import ROOT, wait_for
from tools.pgcluster import free_port


@contextmanager
def gunicorn(url: str, app: str | None = None, **env):
    """The API (or another WSGI app) under api/gunicorn.conf.py on a free port."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    environ.update(DATABASE_URL=url, BIND=f"127.0.0.1:{port}", PYTHONPATH=str(ROOT),
                   LOG_LEVEL="WARNING", **env)
    command = [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"]
    if app:
        command.append(app)
    log = open(WORKDIR / f"gunicorn-{port}.log", "ab")
    process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base), timeout=30, interval=0.05, message="gunicorn")
        yield base, process
    finally:
        process.terminate()
        process.wait(30)
        log.close()



def load(base: str, method: str, paths: list[str], body: bytes | None, clients: int,
         seconds: float, headers: dict[str, str] | None = None) -> dict:
    """clients connections, each one request at a time, for seconds, with wrk
    (a C load generator, Debian's package `wrk`): a Python client would take
    the CPU of the server it measures on a small machine."""
    if not shutil.which("wrk"):
        raise SystemExit("the API benchmarks need wrk: apt-get install wrk")
    return _wrk(base, method, paths, body, clients, seconds, headers)


_WRK_SCRIPT = """
local paths = {%s}
local n = 0
wrk.method = "%s"
wrk.headers["Content-Type"] = "application/json"
%s
request = function()
  n = n + 1
  return wrk.format(nil, paths[(n %% #paths) + 1])
end
"""


_scripts = 0


def _wrk_command(base, method, paths, body, clients, seconds, timeout: float = 2,
                 headers: dict[str, str] | None = None) -> list[str]:
    global _scripts
    _scripts += 1
    script = WORKDIR / f"wrk-{os.getpid()}-{_scripts}.lua"
    body_line = f"wrk.body = {json.dumps(body.decode())}" if body else ""
    for name, value in (headers or {}).items():
        body_line += f"\nwrk.headers[{json.dumps(name)}] = {json.dumps(value)}"
    script.write_text(_WRK_SCRIPT % (", ".join(json.dumps(p) for p in paths), method, body_line))
    return ["wrk", "-t", str(min(2, clients)), "-c", str(clients), "-d", f"{seconds:g}s", "--latency",
            "--timeout", f"{timeout:g}s", "-s", str(script), base]


def wrk_start(base: str, paths: list[str], clients: int, seconds: float, timeout: float) -> subprocess.Popen:
    """wrk in the background (GET paths), e.g. a crowd of waiting clients."""
    return subprocess.Popen(_wrk_command(base, "GET", paths, None, clients, seconds, timeout),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wrk(base, method, paths, body, clients, seconds, headers=None) -> dict:
    output = subprocess.run(_wrk_command(base, method, paths, body, clients, seconds, headers=headers),
                            check=True, capture_output=True, text=True).stdout
    figures = {"tool": "wrk", "server_errors": 0}
    for line in output.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            figures["requests_per_second"] = float(words[1])
        elif len(words) == 2 and words[0] in ("50%", "99%"):
            figures["p50_ms" if words[0] == "50%" else "p99_ms"] = _ms(words[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            figures["non_2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            figures["socket_errors"] = line.split(":", 1)[1].strip()
    return figures


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


SUBMISSION = json.dumps({"expression": JOB, "variables": JOB_VARIABLES}).encode()


def api_load(url: str, clients: int, seconds: float, cluster=None) -> dict:
    """POST /api/expression, GET /api/result/<id>, and the trivial ceiling;
    with a cluster of our own, pgbench's single-row INSERT rate right after,
    so that each run's ratios compare figures measured together."""
    figures = {}
    with gunicorn(url) as (base, _):
        figures["post_expression"] = load(base, "POST", ["/api/expression"], SUBMISSION, clients, seconds)
        paths = [f"/api/result/{i}" for i in range(1, 1001)]
        figures["get_result"] = load(base, "GET", paths, None, clients, seconds)
    with gunicorn(url, app="bench.trivial_app:app") as (base, _):
        figures["trivial_flask"] = load(base, "GET", ["/healthz"], None, clients, seconds)
    if cluster is not None:
        figures["pgbench_insert_tps"] = pgbench_insert_tps(cluster, clients, max(2, int(seconds)))
    return figures


def pgbench_insert_tps(cluster, clients: int, seconds: int, trigger: bool = True) -> float:
    """The database's own ceiling for single-row INSERTs into tasks."""
    script = Path(WORKDIR) / "insert.sql"
    script.write_text("INSERT INTO tasks (expression, variables) VALUES "
                      f"('{JOB}', '{json.dumps(JOB_VARIABLES)}');\n")
    os.chmod(WORKDIR, 0o755)
    os.chmod(script, 0o644)
    import psycopg
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE tasks {'ENABLE' if trigger else 'DISABLE'} TRIGGER tasks_inserted_notify")
    try:
        output = subprocess.run(
            [str(cluster.bindir / "pgbench"), "-n", "-h", str(cluster.socket_dir), "-p", str(cluster.port),
             "-U", "postgres", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
             "-f", str(script), "postgres"],
            check=True, capture_output=True, text=True).stdout
    finally:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    for line in output.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench output:\n{output}")
