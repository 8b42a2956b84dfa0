"""Where one request's CPU goes in the API process: the WSGI app
called in-process (no server, no network) for POST /api/expression and GET
/api/result/<id> of a finished task, under cProfile, against a real
PostgreSQL; prints microseconds of CPU per request and the functions that
take most of it (own time, summed over callers).

    python -m bench.request_profile            # BENCH_PROFILE_REQUESTS (2000) each
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time

import psycopg

from bench.common import JOB, JOB_VARIABLES

REQUESTS = int(os.environ.get("BENCH_PROFILE_REQUESTS", "2000"))
TOP = 14


def _environ(method: str, path: str, body: bytes = b"") -> dict:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "5000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "127.0.0.1:5000", "REMOTE_ADDR": "127.0.0.1"}


def _call(app, method: str, path: str, body: bytes = b"") -> int:
    status = []
    chunks = app(_environ(method, path, body), lambda s, h, e=None: status.append(s))
    b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    return int(status[0].split()[0])


def profile(app, method: str, paths: list[str], body: bytes, expect: int) -> dict:
    for path in paths[:200]:  # warm: pool, caches, prepared statements
        assert _call(app, method, path, body) == expect
    profiler = cProfile.Profile(time.process_time)  # CPU, not wall: waits on the database do not count
    cpu = time.process_time()
    wall = time.perf_counter()
    profiler.enable()
    for i in range(REQUESTS):
        _call(app, method, paths[i % len(paths)], body)
    profiler.disable()
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    # The same again without the profiler: the CPU a request really costs.
    plain = time.process_time()
    for i in range(REQUESTS):
        _call(app, method, paths[i % len(paths)], body)
    plain = time.process_time() - plain
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # own times add up to the whole
    rows = sorted(((v[2], v[3], k) for k, v in stats.stats.items()), reverse=True)[:TOP]
    return {
        "cpu_us_per_request": round(plain / REQUESTS * 1e6, 1),
        "cpu_us_per_request_profiled": round(cpu / REQUESTS * 1e6, 1),
        "wall_us_per_request_profiled": round(wall / REQUESTS * 1e6, 1),
        "top_own_time": [{"function": f"{os.path.basename(k[0])}:{k[1]} {k[2]}",
                          "own_share": round(own / total, 3), "cumulative_share": round(cum / total, 3)}
                         for own, cum, k in rows],
        "by_package": _by_package(stats, total),
    }


def _by_package(stats: pstats.Stats, total: float) -> dict:
    shares: dict[str, float] = {}
    for (filename, _, _), v in stats.stats.items():
        name = "builtins (C: socket, libpq, json, ...)" if filename == "~" else _package(filename)
        shares[name] = shares.get(name, 0) + v[2]
    return {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:10]}


def _package(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    for ours in ("api", "core", "worker"):
        if ours in parts:
            return ours + " (ours)"
    return "python stdlib"


def run(url: str) -> dict:
    from api import create_app
    app = create_app({"DATABASE_URL": url})
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO tasks (expression, status, result, finished_at) "
                         "SELECT '1+1', 'done', '2', now() FROM generate_series(1, 1000)")
            ids = [i for (i,) in conn.execute("SELECT id FROM tasks WHERE status = 'done' ORDER BY id LIMIT 1000")]
        body = json.dumps({"expression": JOB, "variables": JOB_VARIABLES}).encode()
        return {"post": profile(app, "POST", ["/api/expression"], body, 202),
                "get": profile(app, "GET", [f"/api/result/{i}" for i in ids], b"", 200)}
    finally:
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()


def report(figures: dict) -> None:
    for name, f in figures.items():
        print(f"\n{name.upper()}: {f['cpu_us_per_request']:.0f} us CPU per request in the app "
              f"(profiled: {f['cpu_us_per_request_profiled']:.0f} us CPU, {f['wall_us_per_request_profiled']:.0f} us wall)")
        print("  by package (own time): " + ", ".join(f"{k} {v:.0%}" for k, v in f["by_package"].items()))
        for row in f["top_own_time"][:8]:
            print(f"  {row['own_share']:6.1%} own {row['cumulative_share']:6.1%} cum  {row['function']}")


def main() -> int:
    from bench.common import database
    with database() as (url, _):
        figures = run(url)
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
