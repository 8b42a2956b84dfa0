"""What API keys cost the API: POST /api/expression and GET /api/result/<id>
under wrk with AUTH=off (as before keys) and with AUTH=required (a key
looked up on every request, the submission admitted by admit_submission()
with the default limits raised out of the way), and with the key holding
9,000 unfinished tasks (the limit's check near its default of 10,000).
Servers take turns, several rounds, in one run: compare the ratios.

    python -m bench.auth_cost [ROUNDS] [SECONDS]
"""

from __future__ import annotations

import json
import statistics
import sys

import psycopg

from api.keys import create_key
from bench.common import database
from bench.http_load import SUBMISSION, gunicorn, load

CLIENTS = 16
LIMITS = {"MAX_PENDING_PER_KEY": "1000000", "RATE_LIMIT_REQUESTS": "1000000", "RATE_LIMIT_ITEMS": "1000000"}


def run(url: str, rounds: int, seconds: float) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, api_keys, submission_buckets RESTART IDENTITY")
        key = create_key(conn, "bench")
        busy = create_key(conn, "busy")
        # 9,000 unfinished tasks of "busy", inserted with their rounds as the API would
        conn.execute("INSERT INTO tasks (expression, owner, fair_round) "
                     "SELECT '1', 2, g FROM generate_series(1, 9000) g")
        # 1,000 of "bench" to read (ids 9001-10000)
        conn.execute("INSERT INTO tasks (expression, owner, fair_round) "
                     "SELECT '1', 1, g FROM generate_series(1, 1000) g")
    own = [f"/api/result/{i}" for i in range(9001, 10001)]
    modes = {  # settings, headers, ids to read (the key's own)
        "auth_off": ({"AUTH": "off"}, {}, own),
        "auth_required": ({"AUTH": "required", **LIMITS}, {"Authorization": f"Bearer {key}"}, own),
        "auth_required_no_limits": ({"AUTH": "required", "MAX_PENDING_PER_KEY": "0", "RATE_LIMIT_REQUESTS": "0",
                                     "RATE_LIMIT_ITEMS": "0"}, {"Authorization": f"Bearer {key}"}, own),
        "auth_required_9000_pending": ({"AUTH": "required", **LIMITS}, {"Authorization": f"Bearer {busy}"},
                                       [f"/api/result/{i}" for i in range(1, 1001)]),
    }
    figures: dict[str, dict[str, list[float]]] = {m: {"post": [], "get": []} for m in modes}
    for _ in range(rounds):
        for mode, (env, headers, paths) in modes.items():
            with gunicorn(url, **env) as (base, _):
                post = load(base, "POST", ["/api/expression"], SUBMISSION, CLIENTS, seconds, headers)
                get = load(base, "GET", paths, None, CLIENTS, seconds, headers)
            assert not post.get("non_2xx") and not get.get("non_2xx"), (mode, post, get)
            figures[mode]["post"].append(post["requests_per_second"])
            figures[mode]["get"].append(get["requests_per_second"])
            if mode == "auth_required_9000_pending":  # keep the key at 9,000 for the next round
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DELETE FROM tasks WHERE owner = 2 AND id > 10000")
    medians = {m: {k: statistics.median(v) for k, v in f.items()} for m, f in figures.items()}
    base = medians["auth_off"]
    return {"rounds": rounds, "seconds": seconds, "clients": CLIENTS, "requests_per_second": figures,
            "median": medians,
            "ratio_to_auth_off": {m: {k: round(v / base[k], 3) for k, v in f.items()} for m, f in medians.items()}}


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5
    with database() as (url, _):
        print(json.dumps(run(url, rounds, seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
