"""The Calculator's own figures, for GET /metrics.

They are gathered through the database rather than served by each
Calculator on a port of its own: the Calculator writes this snapshot into
its row of the calculators table with every heartbeat (sql/queries/
heartbeat.sql, every HEARTBEAT_SECONDS), and the API's /metrics exposes the
rows of the live Calculators with a `calculator` label (api/metrics.py).
So one scrape target covers every Calculator, on any machine, however they
are scaled (docker-compose's scaled Calculators have no ports), and the
Calculator stays a single-threaded process that forks its evaluation
processes safely (no HTTP server thread in it). The price: figures are up to
one heartbeat old, and a Calculator's series end when it stops.

Counters only grow while the Calculator lives; plain integers suffice, as
only the Calculator's one thread touches them. The histograms' buckets are
the upper bounds below (cumulative counts are built by the API).
"""

from __future__ import annotations

import bisect

EVALUATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                      0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CLAIM_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
CLAIM_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

COUNTERS = (
    "results_stored",           # outcomes stored (done or error)
    "stale_results_discarded",  # outcomes refused by the lease fence
    "evaluation_timeouts",      # tasks past CALCULATION_TIMEOUT (CPU) or CALCULATION_WALL_TIMEOUT
    "evaluation_processes_killed",  # ended for a runaway: its CPU timer, or the Calculator's SIGKILL
    "evaluation_processes_died",    # died on their own (crash, OOM kill, signal)
    "tasks_given_up",           # finished with "gave up after N attempts"
    "tasks_handed_back",        # waited unstarted past the hold time: released (fair claiming)
)

# Why a task's calculation was stopped: it ran past CALCULATION_TIMEOUT (its
# process killed), it hit MEMORY_LIMIT_MB (its outcome: out of memory), it
# was cancelled while it ran (its process killed).
KILL_CAUSES = ("timeout", "memory", "cancel")


class Histogram:
    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict:
        return {"buckets": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


class CalculatorMetrics:
    def __init__(self):
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.tasks_killed = dict.fromkeys(KILL_CAUSES, 0)
        self.evaluation_seconds = Histogram(EVALUATION_BUCKETS)
        self.claim_size = Histogram(CLAIM_SIZE_BUCKETS)
        self.claim_seconds = Histogram(CLAIM_SECONDS_BUCKETS)

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def killed(self, cause: str) -> None:
        self.tasks_killed[cause] += 1

    def claimed(self, tasks: int) -> None:
        self.claim_size.observe(tasks)

    def claim_took(self, seconds: float) -> None:
        """Every claim statement, whatever it got: its time, round trip included."""
        self.claim_seconds.observe(seconds)

    def evaluated(self, seconds: float) -> None:
        self.evaluation_seconds.observe(seconds)

    def snapshot(self) -> dict:
        """What the heartbeat stores (jsonb) and api/metrics.py reads."""
        return {
            "counters": dict(self.counters),
            "tasks_killed": dict(self.tasks_killed),
            "evaluation_seconds": self.evaluation_seconds.snapshot(),
            "claim_size": self.claim_size.snapshot(),
            "claim_seconds": self.claim_seconds.snapshot(),
        }


# The one set of figures of this Calculator process.
METRICS = CalculatorMetrics()
