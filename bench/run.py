"""make bench: every scenario, several runs, one database, one invocation.

    make bench                       # the full run (about 15 minutes)
    BENCH_QUICK=1 make bench         # a short smoke run of every scenario

Prints a table (median, min, max of the runs) and writes the figures as JSON
to bench/results/<timestamp>.json. Everything compared runs here, on the
same database, so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import psycopg

from bench import auth_cost, fairness, http_load, latency, memory, noisy_neighbour, parsing, throughput
from bench.common import database

QUICK = os.environ.get("BENCH_QUICK") == "1"
RUNS = int(os.environ.get("BENCH_RUNS", "1" if QUICK else "3"))
TASKS = int(os.environ.get("BENCH_TASKS", "2000" if QUICK else "20000"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "3" if QUICK else "20"))
LOAD_SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "2" if QUICK else "10"))
MEMORY_TASKS = int(os.environ.get("BENCH_MEMORY_TASKS", "20000" if QUICK else "100000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def repeat(name: str, measure, runs: int = RUNS) -> list:
    values = []
    for run in range(runs):
        value = measure()
        print(f"  {name} run {run + 1}/{runs}: {_short(value)}", flush=True)
        values.append(value)
    return values


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}"
    return json.dumps(value, default=str)[:160]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "memory_gb": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main() -> int:
    figures: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
                     "settings": {"runs": RUNS, "tasks": TASKS, "latency_seconds": LATENCY_SECONDS,
                                  "load_seconds": LOAD_SECONDS, "clients": CLIENTS,
                                  "memory_tasks": MEMORY_TASKS}}
    with database() as (url, cluster):
        with psycopg.connect(url, autocommit=True) as conn:
            figures["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
            print("throughput", flush=True)
            figures["throughput"] = {
                "raw_loop_evaluating": repeat("raw loop, evaluating", lambda: throughput.raw_loop_throughput(conn, TASKS, True)),
                "raw_loop_not_evaluating": repeat("raw loop, no evaluation", lambda: throughput.raw_loop_throughput(conn, TASKS, False)),
                "one_calculator": repeat("1 Calculator", lambda: throughput.calculators_throughput(url, conn, TASKS, 1, False)),
                "two_calculators": repeat("2 Calculators", lambda: throughput.calculators_throughput(url, conn, TASKS, 2, False)),
                "one_calculator_distinct": repeat("1 Calculator, distinct", lambda: throughput.calculators_throughput(url, conn, TASKS, 1, True)),
            }
            print("latency", flush=True)
            rate = 50
            lat = figures["latency"] = {
                "sql_insert": repeat("SQL insert", lambda: latency.sql_latency(url, conn, rate, LATENCY_SECONDS)),
                "raw_loop_in_process_floor": repeat(
                    "raw loop, in-process (the floor)", lambda: latency.raw_loop_latency(url, conn, rate, LATENCY_SECONDS)),
                "sql_insert_synchronous_commit_on": repeat(
                    "SQL insert, SYNCHRONOUS_COMMIT=on",
                    lambda: latency.sql_latency(url, conn, rate, LATENCY_SECONDS, synchronous_commit="on")),
                "without_notify_poll_1s": repeat(
                    "no NOTIFY, poll every 1 s",
                    lambda: latency.sql_latency(url, conn, rate, min(LATENCY_SECONDS, 10), notify=False)),
            }
            with http_load.gunicorn(url) as (base, _):
                lat["http_submit_then_wait"] = repeat(
                    "HTTP POST + GET ?wait=", lambda: latency.http_latency(url, conn, base, rate, LATENCY_SECONDS))
            print("API", flush=True)
            figures["api"] = repeat("API load", lambda: http_load.api_load(url, CLIENTS, LOAD_SECONDS, cluster))
            seconds = max(2, int(LOAD_SECONDS))
            figures["pgbench_insert_tps"] = repeat(
                f"pgbench INSERT, {CLIENTS} clients", lambda: http_load.pgbench_insert_tps(cluster, CLIENTS, seconds))
            figures["trigger"] = {
                "with_trigger_1_client": repeat("INSERT with trigger, 1 client", lambda: http_load.pgbench_insert_tps(cluster, 1, seconds, True)),
                "without_trigger_1_client": repeat("INSERT without trigger, 1 client", lambda: http_load.pgbench_insert_tps(cluster, 1, seconds, False)),
                "with_trigger": repeat(f"INSERT with trigger, {CLIENTS} clients", lambda: http_load.pgbench_insert_tps(cluster, CLIENTS, seconds, True)),
                "without_trigger": repeat(f"INSERT without trigger, {CLIENTS} clients", lambda: http_load.pgbench_insert_tps(cluster, CLIENTS, seconds, False)),
            }
            print("parsing", flush=True)
            figures["parsing"] = parsing.measure()
            print("fair claiming", flush=True)
            figures["fairness"] = fairness.measure(url, conn)
            print("the noisy neighbour", flush=True)
            figures["noisy_neighbour"] = noisy_neighbour.measure(url, conn)
            print("what API keys cost the API", flush=True)
            figures["auth_cost"] = auth_cost.run(url, 1, LOAD_SECONDS)
            print("memory", flush=True)
            figures["memory"] = {
                "calculator": memory.calculator_memory(url, conn, MEMORY_TASKS),
                "api": memory.api_memory(url, conn, MEMORY_TASKS),
            }
    report(figures)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nfigures written to {path}")
    return 0


def med(values, key=None):
    return statistics.median([key(v) if key else v for v in values])


def report(f: dict) -> None:
    tp, lat = f["throughput"], f["latency"]
    raw = med(tp["raw_loop_evaluating"])
    rows = [("throughput (tasks/s)", "median", "min", "max", "vs raw loop")]
    for name, values in tp.items():
        rows.append((name, f"{med(values):,.0f}", f"{min(values):,.0f}", f"{max(values):,.0f}",
                     f"{med(values) / raw:.2f}x"))
    print()
    _table(rows)
    rows = [("latency insert->result (ms)", "p50", "p90", "p99", "max")]
    for name, values in lat.items():
        view = (lambda v: v["database"]) if name.startswith("http") else (lambda v: v)
        rows.append((name + (" (database)" if name.startswith("http") else ""),
                     *(f"{med(values, lambda v, k=k: view(v)[k]):.2f}" for k in ("p50", "p90", "p99", "max"))))
        if name.startswith("http"):
            rows.append((name + " (client)", *(f"{med(values, lambda v, k=k: v['client'][k]):.2f}"
                                               for k in ("p50", "p90", "p99", "max"))))
    print()
    _table(rows)
    api = f["api"]
    pgbench = med(f["pgbench_insert_tps"])
    rows = [(f"API, {f['settings']['clients']} clients ({api[0]['post_expression']['tool']})",
             "req/s", "p50 ms", "p99 ms", "5xx")]
    for name in ("post_expression", "get_result", "trivial_flask"):
        rows.append((name, f"{med(api, lambda v: v[name]['requests_per_second']):,.0f}",
                     f"{med(api, lambda v: v[name]['p50_ms']):.2f}", f"{med(api, lambda v: v[name]['p99_ms']):.2f}",
                     str(max(v[name].get("server_errors", 0) for v in api))))
    rows.append(("pgbench INSERT (TPS)", f"{pgbench:,.0f}", "", "", ""))
    print()
    _table(rows)
    trig = f["trigger"]
    if "pgbench_insert_tps" in api[0]:
        # Each run's API figures against the pgbench run right after them.
        for name, label, target in (("post_expression", "POST /api/expression", 0.5),
                                    ("get_result", "GET /api/result/<id>", 1.0)):
            ratios = [v[name]["requests_per_second"] / v["pgbench_insert_tps"] for v in api]
            print(f"\n{label} = {statistics.median(ratios):.2f} x pgbench INSERT TPS measured with it "
                  f"(runs: {', '.join(f'{r:.2f}' for r in ratios)}; target {target})", end="")
        print()
    for clients in ("_1_client", ""):
        with_t, without = med(trig["with_trigger" + clients]), med(trig["without_trigger" + clients])
        print(f"NOTIFY trigger cost{clients.replace('_', ' ') or ' (' + str(f['settings']['clients']) + ' clients)'}: "
              f"{with_t:,.0f} vs {without:,.0f} TPS = {(1 - with_t / without) * 100:+.1f} %")
    parse = f["parsing"]
    print(f"parsing, worst shape ({parse['worst_shape']}): {parse['worst_per_10kb_ms']:.1f} ms CPU "
          f"per 10 KB; ordinary expression: parse {parse['ordinary_parse_us']} us, "
          f"evaluate {parse['ordinary_evaluate_us']} us")
    fairness.report(f["fairness"])
    noisy_neighbour.report(f["noisy_neighbour"])
    for mode, ratios in f["auth_cost"]["ratio_to_auth_off"].items():
        print(f"API keys, {mode}: POST {ratios['post']:.2f}x, GET {ratios['get']:.2f}x of AUTH=off")
    for name, m in f["memory"].items():
        print(f"RSS {name}: {m['before_kb'] / 1024:.1f} MiB -> {m['after_kb'] / 1024:.1f} MiB "
              f"({m['change'] * 100:+.1f} %)")


def _table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
