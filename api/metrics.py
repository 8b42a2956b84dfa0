"""GET /metrics: Prometheus text format, with prometheus-client.

Three kinds of figures (every metric is listed in docs/operations.md, "Metrics"):

- HTTP request durations by method, route and status, measured by Flask's
  before/after request hooks, so whichever WSGI server runs the app.
  Under a server of several processes (gunicorn's workers), set
  PROMETHEUS_MULTIPROC_DIR to an empty directory shared by the processes
  (api/gunicorn.conf.py does it, with api/metrics_dir.py): every
  process then writes its histogram into files there and a scrape,
  answered by any process, adds them all up (prometheus-client's
  multiprocess mode).
- The queue, read from the database at scrape time through GET /api/stats's
  own code (api/stats.py), and the live Calculators.
- Each live Calculator's own figures, which it writes into its row of the
  calculators table with every heartbeat (worker/metrics.py).

A scrape that cannot reach the database still answers, with
calculator_database_up 0 and the HTTP figures.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from api.db import DatabaseUnavailable, connection
from api.metrics_dir import MULTIPROC_ENV
from api.tenants import tenants, usage_by_label
from core.database import load_query

blueprint = Blueprint("metrics", __name__)

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Created once per process, registered with no registry: each scrape builds
# its own (below), so create_app may run many times in one process (tests).
HTTP_DURATION = Histogram(
    "calculator_http_request_duration_seconds",
    "Time from the request's arrival in Flask to its response, by route template and status.",
    ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=None)


def init_app(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(blueprint)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        # The route's template ("/api/result/<expression_id>"), never the path
        # itself: the label's values stay few whatever clients ask for.
        route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        HTTP_DURATION.labels(request.method, route, str(response.status_code)).observe(
            time.perf_counter() - started)
    return response


@blueprint.get("/metrics")
def metrics():
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(HTTP_DURATION)
    registry.register(DatabaseCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class DatabaseCollector:
    """The queue and the Calculators, read when Prometheus scrapes."""

    def collect(self):
        try:
            stats = _queue_stats()
            calculators = live_calculators()
        except DatabaseUnavailable:
            yield GaugeMetricFamily("calculator_database_up",
                                    "1 when this scrape could read the database, else 0.", value=0)
            return
        yield GaugeMetricFamily("calculator_database_up",
                                "1 when this scrape could read the database, else 0.", value=1)
        yield from queue_metrics(stats)
        yield from key_metrics(pending_by_key())
        yield from key_usage_metrics(usage_by_label(tenants(with_pending=False), TOP_KEYS))
        yield from calculator_metrics(calculators)


def _queue_stats() -> dict:
    # GET /api/stats's own code, so that /metrics and the page report what
    # the JSON endpoint reports, however it is computed.
    from flask import make_response
    from api import stats
    return make_response(stats.queue_stats()).get_json()


def live_calculators() -> list[dict]:
    """The live Calculators' rows (sql/queries/live_calculators.sql) as dicts."""
    with connection() as conn:
        cursor = conn.execute(load_query("live_calculators"))
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


# Keys with their own series in the per-key figures; the others are summed.
TOP_KEYS = 20


def pending_by_key() -> list[tuple]:
    with connection() as conn:
        return conn.execute(load_query("pending_by_key"), {"top": TOP_KEYS}).fetchall()


def key_metrics(rows):
    """Per key (the TOP_KEYS with the most pending tasks by name; "(other
    keys)" for the rest together, "(none)" for tasks without a key)."""
    pending = GaugeMetricFamily("calculator_key_pending_tasks",
                                f"Pending tasks per API key (the {TOP_KEYS} keys with the most; the rest "
                                "as '(other keys)'; '(none)': tasks without a key).", labels=["key"])
    oldest = GaugeMetricFamily("calculator_key_oldest_pending_age_seconds",
                               "Age of each key's oldest pending task (labels as calculator_key_pending_tasks).",
                               labels=["key"])
    for key, other, count, age in rows:
        label = key if key is not None else ("(other keys)" if other else "(none)")
        pending.add_metric([label], float(count))
        oldest.add_metric([label], age)
    yield pending
    yield oldest


def key_usage_metrics(figures: dict[str, tuple[float, int]]):
    """Per key, from the live Calculators' tenant_usage (api/tenants.py):
    the TOP_KEYS most active keys by name, the rest as "(other keys)", rows
    without an owner as "(none)"."""
    running = GaugeMetricFamily("calculator_key_running_tasks",
                                f"Tasks the live Calculators run now per API key (the {TOP_KEYS} most active "
                                "keys; the rest as '(other keys)'; '(none)': tasks without a key).",
                                labels=["key"])
    seconds = CounterMetricFamily("calculator_key_evaluation_seconds",
                                  "CPU seconds of evaluation per API key, summed over the live Calculators "
                                  "since each started (labels as calculator_key_running_tasks; a Calculator "
                                  "that stops takes its seconds with it).", labels=["key"])
    for label, (cpu, tasks) in sorted(figures.items()):
        running.add_metric([label], float(tasks))
        seconds.add_metric([label], cpu)
    yield running
    yield seconds


def queue_metrics(stats: dict):
    queue = stats["queue"]
    for name, key, help_text in (
            ("calculator_queue_pending_tasks", "pending", "Tasks without an outcome (queued, leased or with an expired lease)."),
            ("calculator_queue_queued_tasks", "queued", "Pending tasks never claimed or handed back: waiting for a Calculator."),
            ("calculator_queue_leased_tasks", "leased", "Pending tasks claimed by a Calculator whose lease runs."),
            ("calculator_queue_expired_lease_tasks", "expired_leases", "Pending tasks whose Calculator's lease ran out (it died or froze): claimable again."),
            ("calculator_queue_oldest_pending_age_seconds", "oldest_pending_seconds", "Age of the oldest pending task (0 when none)."),
    ):
        yield GaugeMetricFamily(name, help_text, value=queue[key])
    outcomes = CounterMetricFamily("calculator_queue_finished_tasks",
                                   "Tasks finished, by outcome status.", labels=["status"])
    for status, count in stats["outcomes"].items():
        outcomes.add_metric([status], count)
    yield outcomes
    yield GaugeMetricFamily("calculator_queue_results_per_second",
                            "Outcomes stored per second over the last minute.",
                            value=stats["results_per_second_last_minute"])
    yield GaugeMetricFamily("calculator_live_calculators",
                            "Calculators whose heartbeat is less than 15 s old.",
                            value=stats["live_calculators"])


CALCULATOR_COUNTERS = {
    "results_stored": ("calculator_results_stored", "Outcomes this Calculator stored."),
    "stale_results_discarded": ("calculator_stale_results_discarded",
                                "Outcomes refused because another Calculator took the task over (lease fencing)."),
    "evaluation_timeouts": ("calculator_evaluation_timeouts",
                            "Tasks that used more than CALCULATION_TIMEOUT of CPU time, or ran past "
                            "CALCULATION_WALL_TIMEOUT, and got the timeout error."),
    "evaluation_processes_killed": ("calculator_evaluation_processes_killed",
                                    "Evaluation processes ended for a runaway calculation: by their CPU-time "
                                    "timer, or SIGKILLed by their Calculator at the wall-clock ceiling."),
    "evaluation_processes_died": ("calculator_evaluation_processes_died",
                                  "Evaluation processes that died on their own (crash, signal, out-of-memory kill)."),
    "tasks_given_up": ("calculator_tasks_given_up",
                       "Tasks finished with 'gave up after N attempts' by this Calculator's claims."),
    "tasks_handed_back": ("calculator_tasks_handed_back",
                          "Claimed tasks that waited unstarted past the hold time and went back to the "
                          "queue, for the fair order to decide again (fair claiming)."),
}


def calculator_metrics(rows):
    """rows: live_calculators()."""
    labels = ["calculator"]
    counters = {key: CounterMetricFamily(name, help_text, labels=labels)
                for key, (name, help_text) in CALCULATOR_COUNTERS.items()}
    evaluation = HistogramMetricFamily(
        "calculator_evaluation_duration_seconds",
        "Time an evaluation process spent on one task (timeouts count the time until the kill).",
        labels=labels)
    claims = HistogramMetricFamily(
        "calculator_claim_size_tasks",
        "Tasks obtained by each claim that got any (_count: claims, _sum: tasks claimed).",
        labels=labels)
    claim_time = HistogramMetricFamily(
        "calculator_claim_duration_seconds",
        "Time of each claim statement, round trip included (flat beside a held snapshot: docs/design.md).",
        labels=labels)
    killed = CounterMetricFamily(
        "calculator_tasks_killed",
        "Tasks whose calculation was stopped, by cause: timeout (ran past CALCULATION_TIMEOUT, its "
        "process killed), memory (hit MEMORY_LIMIT_MB: the out-of-memory error), cancel (cancelled "
        "while it ran, its process killed).",
        labels=labels + ["cause"])
    heartbeat = GaugeMetricFamily("calculator_heartbeat_age_seconds",
                                  "Seconds since the Calculator last wrote its heartbeat (and these figures).",
                                  labels=labels)
    for row in rows:
        label, figures = f"{row['hostname']}:{row['pid']}", row["metrics"]
        heartbeat.add_metric([label], float(row["heartbeat_age_seconds"]))
        for key, value in figures.get("counters", {}).items():
            if key in counters:
                counters[key].add_metric([label], value)
        for cause, value in figures.get("tasks_killed", {}).items():
            killed.add_metric([label, cause], value)
        for family, key in ((evaluation, "evaluation_seconds"), (claims, "claim_size"),
                            (claim_time, "claim_seconds")):
            histogram = figures.get(key)
            if histogram:
                family.add_metric([label], *_cumulative(histogram))
    yield heartbeat
    yield from counters.values()
    yield killed
    yield evaluation
    yield claims
    yield claim_time


def _cumulative(histogram: dict):
    """(buckets, sum) in prometheus-client's form from worker/metrics.py's snapshot."""
    buckets, total = [], 0
    bounds = [*(str(float(b)) for b in histogram["buckets"]), "+Inf"]
    for bound, count in zip(bounds, histogram["counts"]):
        total += count
        buckets.append((bound, total))
    return buckets, histogram["sum"]
