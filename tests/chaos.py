"""The chaos run: the promise "every accepted expression gets exactly one
correct outcome", checked while processes are really killed.

    make chaos                           # the long run: 5,000 expressions
    python -m tests.chaos --expressions 300 --fault-seconds 15   # what make test runs

It starts its own PostgreSQL, the API (gunicorn, real HTTP on 127.0.0.1) and
3 Calculators, which log in as api_user and worker_user, members of the
least-privileged roles (as in production), submits a known mix (ordinary
expressions with known answers, division by zero, domain errors, runaways
that hit CALCULATION_TIMEOUT, and some rows inserted with SQL) and meanwhile
SIGKILLs Calculators and evaluation processes, freezes one Calculator past
its lease while it holds a batch, restarts PostgreSQL once and SIGTERMs one
Calculator. Then it checks every row, from the database and through the
API, and prints the figures. A broken promise prints the ids that broke it;
so does a fault that did not really happen (no freeze, no evaluation process
death seen by its Calculator, no stale result fenced off): a chaos run
without its faults proves nothing.

The processes are started here, not by `make run`'s supervisor: the faults
need to know which process is which (to freeze a Calculator while it holds
a batch, to SIGTERM one and time its exit), and a supervisor restarting
what is killed would blur what the run measures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from core.migrations import apply_migrations
from tests.http_client import post_json, request
from tests.support import ROOT, CalculatorProcess, wait_for
from tools.pgcluster import LocalPostgres, free_port

TIMEOUT = 1  # CALCULATION_TIMEOUT of the Calculators in the run (CPU time)
# The wall-clock ceiling, short: an evaluation process that the freeze
# stopped in mid-task holds its place (and its Calculator's room to claim)
# until then, while the other Calculators take the burst the frozen one is
# to claim part of (with 4 x TIMEOUT the freeze missed in 2 of 3 long runs).
# A runaway with at least half a core still reaches its CPU timeout first.
WALL_TIMEOUT = 2 * TIMEOUT
CALCULATOR_SETTINGS = dict(calculation_timeout=TIMEOUT, calculation_wall_timeout=WALL_TIMEOUT,
                           lease_seconds=2, queue_wait_time=1, max_attempts=50, task_num=20,
                           num_processes=2)
# A runaway's outcome: its CPU timeout, or the wall-clock ceiling when the
# freeze stopped its process mid-calculation for longer than that (a stopped
# process uses no CPU time), or the machine starved it.
RUNAWAY_ERRORS = frozenset({f"calculation timed out after {TIMEOUT} s of CPU time",
                            f"calculation timed out after {WALL_TIMEOUT} s of wall-clock time"})
# Inserted just before the freeze so that the frozen Calculator holds part of
# it (its evaluation processes are frozen first, so it cannot finish them):
# its results come late and are fenced off.
FREEZE_BURST = 60
FREEZE_BURST_TASK = ("x * 6 + 1", {"x": 7}, ("done", 43))
LOGIN_USERS = {"api_user": "calculator_api", "worker_user": "calculator_worker"}


def make_mix(count: int, rng: random.Random) -> list[tuple[str, dict, tuple]]:
    """(expression, variables, expected outcome) with answers known here."""
    mix = []
    for n in range(count):
        a, b, c = rng.randint(1, 10**6), rng.randint(1, 1000), rng.randint(-50, 50)
        kind = n % 20
        if kind == 0:
            mix.append(("x / (y - y)", {"x": a, "y": b}, ("error", "division by zero")))
        elif kind == 1:
            mix.append(("sqrt(-x)", {"x": a}, ("error", "math domain error in sqrt")))
        elif kind == 2 and n % 100 == 2:
            mix.append(("9**(9**9) + x", {"x": a}, ("error", RUNAWAY_ERRORS)))
        elif kind == 3:
            mix.append(("x / y", {"x": a, "y": b}, ("done", a / b)))
        elif kind == 4:
            mix.append(("fac(y % 40)", {"y": b}, ("done", math.factorial(b % 40))))
        elif kind == 5:
            mix.append(("sqrt(x) + y", {"x": a, "y": b}, ("done", math.sqrt(a) + b)))
        else:
            mix.append(("x*y + z", {"x": a, "y": b, "z": c}, ("done", a * b + c)))
    return mix


@dataclass
class Figures:
    submitted_http: int = 0
    submitted_sql: int = 0
    submitted_burst: int = 0
    http_retries: int = 0
    calculators_killed: int = 0
    calculators_frozen: int = 0
    evaluators_killed: int = 0
    evaluator_deaths_logged: int = 0
    database_restarts: int = 0
    sigterm_exit_seconds: float | None = None
    sigterm_exit_code: int | None = None
    drain_seconds: float = 0.0
    stale_discarded: int = 0
    problems: list[str] = field(default_factory=list)


class ChaosRun:
    def __init__(self, expressions: int, fault_seconds: float, seed: int, workdir: Path):
        self.rng = random.Random(seed)
        self.mix = make_mix(expressions, self.rng)
        self.fault_seconds = fault_seconds
        self.workdir = workdir
        self.figures = Figures()
        self.accepted: dict[int, tuple] = {}
        self.calculators: list[CalculatorProcess] = []
        self.retired: list[CalculatorProcess] = []
        self._lock = threading.Lock()
        self._started = 0
        self.frozen: CalculatorProcess | None = None

    # --- the pieces -----------------------------------------------------

    def start(self) -> None:
        self.cluster = LocalPostgres().start()
        with psycopg.connect(self.cluster.url, autocommit=True) as conn:
            apply_migrations(conn)
            for user, role in LOGIN_USERS.items():
                conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE {role}")
        self.api_url = make_conninfo(self.cluster.url, user="api_user")
        self.worker_url = make_conninfo(self.cluster.url, user="worker_user")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(DATABASE_URL=self.api_url, BIND=f"127.0.0.1:{port}", DB_TIMEOUT="2",
                   PYTHONPATH=str(ROOT), WEB_CONCURRENCY="2", GUNICORN_THREADS="4")
        self.api_log = open(self.workdir / "api.log", "ab")
        self.api = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py"],
                                    cwd=ROOT, env=env, stdout=self.api_log, stderr=subprocess.STDOUT)
        for _ in range(3):
            self.start_calculator()
        wait_for(lambda: self._ready(), timeout=60, interval=0.1, message="the API")

    def _ready(self) -> bool:
        try:
            return request(self.base, "GET", "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    def start_calculator(self) -> CalculatorProcess:
        self._started += 1
        calc = CalculatorProcess(self.worker_url, self.workdir / f"calculator-{self._started}.log",
                                 **CALCULATOR_SETTINGS)
        self.calculators.append(calc)
        return calc

    def stop(self) -> None:
        for calc in self.calculators + self.retired:
            if calc.process.poll() is None:
                calc.kill()
        self.api.terminate()
        self.api.wait(20)
        self.api_log.close()
        self.cluster.stop()

    # --- load -------------------------------------------------------------

    def submit_all(self) -> None:
        """HTTP for most, SQL for every 10th; HTTP retries on 503 or a dropped
        connection until accepted (at-least-once, as a real client would)."""
        conn = None
        pace = self.fault_seconds * 0.8 / max(1, len(self.mix))
        for n, (expression, variables, expected) in enumerate(self.mix):
            if n % 10 == 9:
                conn = self._insert_sql(conn, expression, variables, expected)
            else:
                self._post(expression, variables, expected)
            time.sleep(pace)
        if conn is not None:
            conn.close()

    def _post(self, expression, variables, expected) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, body = post_json(self.base, "/api/expression",
                                            {"expression": expression, "variables": variables})
            except OSError:
                status, body = None, None
            if status == 202:
                with self._lock:
                    self.accepted[body["expression_id"]] = expected
                    self.figures.submitted_http += 1
                return
            if status is not None and status != 503:
                self.figures.problems.append(f"submission refused: {status} {body}")
                return
            if time.monotonic() > deadline:
                self.figures.problems.append("a submission was not accepted for 60 s")
                return
            self.figures.http_retries += 1
            time.sleep(0.05)

    def _insert_sql(self, conn, expression, variables, expected):
        while True:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.cluster.url, autocommit=True)
                task_id = conn.execute(
                    "INSERT INTO tasks (expression, variables) VALUES (%s, %s) RETURNING id",
                    (expression, json.dumps(variables))).fetchone()[0]
                with self._lock:
                    self.accepted[task_id] = expected
                    self.figures.submitted_sql += 1
                return conn
            except psycopg.OperationalError:
                conn = None
                time.sleep(0.05)

    # --- faults -------------------------------------------------------------

    def inflict_faults(self, loader: threading.Thread) -> float:
        """Faults until the load is in and fault_seconds have passed; returns
        the time of the last fault."""
        started = time.monotonic()
        restarted = sigtermed = frozen = False
        next_kill = started + self.rng.uniform(1, 2)
        next_child_kill = started + 1.5
        last_fault = started
        while loader.is_alive() or time.monotonic() - started < self.fault_seconds:
            now = time.monotonic()
            elapsed = now - started
            if not restarted and elapsed > self.fault_seconds * 0.4:
                self.cluster.restart()
                self.figures.database_restarts += 1
                restarted, last_fault = True, time.monotonic()
            elif not frozen and elapsed > self.fault_seconds * 0.25:
                self._freeze_one()
                frozen, last_fault = True, time.monotonic()
            elif not sigtermed and elapsed > self.fault_seconds * 0.6:
                self._sigterm_one()
                sigtermed, last_fault = True, time.monotonic()
            elif now >= next_kill:
                # Not the frozen one: it is to wake up late and be fenced off.
                victim = self.rng.choice([c for c in self.calculators if c is not self.frozen]
                                         or self.calculators)
                victim.kill()
                self.calculators.remove(victim)
                self.retired.append(victim)
                self.start_calculator()
                self.figures.calculators_killed += 1
                next_kill, last_fault = now + self.rng.uniform(1, 2), now
            elif now >= next_child_kill:
                if self._kill_an_evaluator():
                    last_fault = now
                next_child_kill = now + self.rng.uniform(1.5, 3)
            time.sleep(0.05)
        return last_fault

    def _insert_burst(self) -> set[int]:
        """FREEZE_BURST rows in one INSERT (one NOTIFY), with known answers."""
        expression, variables, expected = FREEZE_BURST_TASK
        while True:
            try:
                with psycopg.connect(self.cluster.url, autocommit=True) as conn:
                    ids = {row[0] for row in conn.execute(
                        "INSERT INTO tasks (expression, variables) SELECT %s, %s::jsonb "
                        "FROM generate_series(1, %s) RETURNING id",
                        (expression, json.dumps(variables), FREEZE_BURST))}
                break
            except psycopg.OperationalError:
                time.sleep(0.05)
        with self._lock:
            self.accepted.update({task_id: expected for task_id in ids})
            self.figures.submitted_burst += len(ids)
        return ids

    def _freeze_one(self) -> None:
        """Freeze a Calculator right after it claimed part of a burst (its
        evaluation processes first, so that it cannot answer any of it), and
        let it go on only once another Calculator has taken one of those tasks
        over: it wakes up late, with results that must be fenced off."""
        # One that is up (a replacement may still be starting on a busy machine).
        victim = self.rng.choice([c for c in self.calculators if "calculator started" in c.log()]
                                 or self.calculators)
        children = _signal_all(victim.evaluator_pids(), signal.SIGSTOP)
        held: set[int] = set()
        with open(victim.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            burst = self._insert_burst()
            seen = bytearray()

            def claimed_some():
                seen.extend(log.read())
                held.update(_claimed_ids(seen.decode(errors="replace")) & burst)
                return held
            try:
                wait_for(claimed_some, timeout=10, interval=0.002,
                         message="the Calculator to be frozen to claim part of the burst")
            except AssertionError as error:
                self.figures.problems.append(str(error))
        os.kill(victim.pid, signal.SIGSTOP)
        self.frozen = victim
        try:
            wait_for(lambda: _process_state(victim.pid) == "T", timeout=5, interval=0.005)
            self.figures.calculators_frozen += 1
        except AssertionError:
            pass  # reported by check() as a missing fault

        def taken_over() -> bool:
            try:  # PostgreSQL may be restarting meanwhile
                with psycopg.connect(self.cluster.url, autocommit=True, connect_timeout=2) as conn:
                    return conn.execute("SELECT count(*) > 0 FROM tasks WHERE id = ANY(%s) "
                                        "AND attempts >= 2", (list(held),)).fetchone()[0]
            except psycopg.Error:
                return False

        def thaw():
            try:
                wait_for(taken_over, timeout=30, interval=0.1,
                         message="another Calculator to take over the frozen one's tasks")
            except AssertionError:
                pass  # no takeover: check() reports that no stale result was discarded
            finally:
                _signal_all([victim.pid, *children], signal.SIGCONT)
                self.frozen = None
        threading.Thread(target=thaw, daemon=True).start()

    def _kill_an_evaluator(self) -> bool:
        for calc in self.rng.sample(self.calculators, len(self.calculators)):
            try:
                pids = calc.evaluator_pids()
            except FileNotFoundError:
                continue
            if pids:
                try:
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.figures.evaluators_killed += 1
                return True
        return False

    def _sigterm_one(self) -> None:
        victim = next(c for c in self.calculators if c is not self.frozen)
        self.calculators.remove(victim)
        started = time.monotonic()
        code = victim.stop(signal.SIGTERM, timeout=TIMEOUT + 30)
        self.figures.sigterm_exit_seconds = time.monotonic() - started
        self.figures.sigterm_exit_code = code
        if code != 0 or self.figures.sigterm_exit_seconds > TIMEOUT + 5:
            self.figures.problems.append(
                f"SIGTERM: exit code {code} after {self.figures.sigterm_exit_seconds:.1f} s")
        self.retired.append(victim)
        self.start_calculator()

    # --- the verdict --------------------------------------------------------

    def wait_drained(self, last_fault: float, limit: float = 300) -> None:
        with psycopg.connect(self.cluster.url, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) = 0 FROM tasks WHERE status = 'pending'")
                     .fetchone()[0], timeout=limit, interval=0.05, message="the queue to drain")
        self.figures.drain_seconds = time.monotonic() - last_fault

    def check(self) -> list[str]:
        broken = []
        with psycopg.connect(self.cluster.url, autocommit=True) as conn:
            rows = {r[0]: r[1:] for r in conn.execute(
                "SELECT id, status, result, error, lease_token IS NOT NULL, process_at > now() FROM tasks")}
        for task_id, expected in self.accepted.items():
            if task_id not in rows:
                broken.append(f"id {task_id}: accepted but missing")
                continue
            status, result, error, _, _ = rows[task_id]
            got = (status, result if status == "done" else error)
            if not _same(got, expected):
                broken.append(f"id {task_id}: got {got}, expected {expected}")
        for task_id, (status, *_rest) in rows.items():
            if status == "pending":
                broken.append(f"id {task_id}: still pending")
        # Through the API too, for every accepted id.
        for task_id, expected in sorted(self.accepted.items()):
            status, _, body = request(self.base, "GET", f"/api/result/{task_id}")
            got = (body.get("status"), body.get("result", body.get("msg")))
            if status != 200 or not _same(got, expected):
                broken.append(f"id {task_id}: API says {status} {body}, expected {expected}")
        for calc in self.calculators + self.retired:
            log = calc.log()
            self.figures.stale_discarded += log.count("discarded stale results")
            self.figures.evaluator_deaths_logged += log.count("evaluation process died")
            if "Traceback" in log:
                broken.append(f"calculator pid {calc.pid} crashed:\n{log[log.index('Traceback'):][:1500]}")
        for calc in self.calculators:
            if calc.process.poll() is not None:
                broken.append(f"calculator pid {calc.pid} exited on its own with code {calc.process.returncode}")
        # The faults must really have happened, or the run proves nothing.
        f = self.figures
        if f.calculators_frozen < 1:
            broken.append("fault missing: no Calculator was seen frozen (state T)")
        if f.evaluators_killed < 1 or f.evaluator_deaths_logged < 1:
            broken.append(f"fault missing: evaluation processes SIGKILLed {f.evaluators_killed}, "
                          f"deaths logged by their Calculators {f.evaluator_deaths_logged}")
        if f.stale_discarded < 1:
            broken.append("fault missing: no late result was fenced off (no 'discarded stale results')")
        return broken


def _signal_all(pids: list[int], signum: int) -> list[int]:
    """Send signum to each pid still there; returns those signalled."""
    sent = []
    for pid in pids:
        try:
            os.kill(pid, signum)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def _claimed_ids(log: str) -> set[int]:
    """Task ids in a Calculator log's 'claimed ids=1-3,7' lines."""
    ids: set[int] = set()
    for line in log.splitlines():
        if " claimed ids=" in line:
            for part in line.split("claimed ids=")[1].split()[0].split(","):
                low, _, high = part.partition("-")
                if low.isdigit() and (high.isdigit() or not high):
                    ids.update(range(int(low), int(high or low) + 1))
    return ids


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _same(got, expected) -> bool:
    if got[0] != expected[0]:
        return False
    if isinstance(expected[1], frozenset):  # one of these
        return got[1] in expected[1]
    if isinstance(expected[1], float):
        return isinstance(got[1], (int, float)) and math.isclose(got[1], expected[1], rel_tol=1e-12)
    return got[1] == expected[1]


def run(expressions: int, fault_seconds: float, seed: int, workdir: Path, out=None) -> tuple[Figures, list[str]]:
    out = out or sys.stdout  # looked up now, so that pytest's capture sees the report
    chaos = ChaosRun(expressions, fault_seconds, seed, workdir)
    started = time.monotonic()
    chaos.start()
    try:
        loader = threading.Thread(target=chaos.submit_all, daemon=True)
        loader.start()
        last_fault = chaos.inflict_faults(loader)
        loader.join()
        chaos.wait_drained(last_fault)
        broken = chaos.check() + chaos.figures.problems
    finally:
        chaos.stop()
    f = chaos.figures
    print(f"""chaos run (seed {seed}, {time.monotonic() - started:.0f} s)
  expressions submitted   {f.submitted_http} over HTTP ({f.http_retries} retries after 503/drops), {f.submitted_sql} with SQL, {f.submitted_burst} in the burst before the freeze
  logins                  api_user and worker_user (least-privileged roles)
  outcomes checked        {len(chaos.accepted)} in the database and through the API
  Calculators SIGKILLed   {f.calculators_killed}
  Calculators frozen      {f.calculators_frozen} (SIGSTOP holding a batch, SIGCONT after a takeover)
  evaluators SIGKILLed    {f.evaluators_killed} ({f.evaluator_deaths_logged} deaths logged by their Calculators)
  PostgreSQL restarts     {f.database_restarts}
  SIGTERM exit            code {f.sigterm_exit_code} after {f.sigterm_exit_seconds or 0:.1f} s (limit {TIMEOUT + 5} s)
  stale results discarded {f.stale_discarded} (late Calculators fenced off)
  drain after last fault  {f.drain_seconds:.1f} s
  promise broken          {len(broken)} time(s)""", file=out, flush=True)
    for line in broken[:50]:
        print("  BROKEN " + line, file=out)
    return f, broken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expressions", type=int, default=5000)
    parser.add_argument("--fault-seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
        _, broken = run(args.expressions, args.fault_seconds, args.seed, Path(workdir))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
