"""CALCULATION_TIMEOUT in CPU time, measured (docs/design.md, "Timeouts").

    .venv/bin/python -m bench.cpu_timeout

1. One evaluation process pinned to one CPU beside 0 to 3 busy loops (so it
   gets 1/1 to 1/4 of that CPU), CALCULATION_TIMEOUT=1: the CPU time and the
   wall-clock time after which a runaway is ended, and the wall-clock time
   of an honest task calibrated to need about 0.5 s of CPU time.
2. The two timers of worker/cpu_timer.py under the same contention (a
   third of a CPU): the POSIX CPU-clock timer as shipped, and the
   ITIMER_PROF fallback; the CPU time after which each ended a runaway.
3. What the timer costs a stream of quick cached tasks: the child's loop
   over 64-task chunks with the timer armed again at most every
   REARM_SECONDS (as shipped), before every task, and only once per chunk
   (about what no timer costs), runs interleaved.
"""

from __future__ import annotations

import statistics
import threading
import time
from multiprocessing import Pipe, RawArray, get_context

from core.settings import CalculatorSettings, ExpressionLimits
from tests.cpu_share import Driver, calibrated, reaped_cpu_seconds, sharing_one_cpu
from worker import evaluation
from worker.evaluation import CUTOFF, PROGRESS_SLOTS
from worker.cpu_timer import CpuTimer
from worker.evaluators import EvaluatorPool

RUNAWAY = "9**(9**9)"


def contention() -> None:
    expression, result, need = calibrated(0.5)
    print(f"honest task: {expression} = {result:g}, needs {need:.2f} s of CPU time here")
    print("| share of a CPU | runaway ended after: CPU s | wall s | honest task: outcome | wall s |")
    print("|---|---:|---:|---|---:|")
    for competitors in range(4):
        pool = EvaluatorPool(CalculatorSettings(num_processes=1, calculation_timeout=1,
                                                calculation_wall_timeout=60))
        pool.start()
        try:
            driver = Driver(pool)
            pid, started = driver.start(RUNAWAY, 1)
            with sharing_one_cpu(pid, competitors):
                runaway, ended = driver.outcome(timeout=60)
            runaway_cpu, runaway_wall = driver.dead_cpu, ended - started
            pid, started = driver.start(expression, 2)
            with sharing_one_cpu(pid, competitors):
                honest, ended = driver.outcome(timeout=60)
            answer = honest.error or f"answered {honest.result}"
            print(f"| 1/{competitors + 1} | {runaway_cpu:.3f} | {runaway_wall:.2f} | {answer} | "
                  f"{ended - started:.2f} |", flush=True)
            assert runaway.error == "calculation timed out after 1 s of CPU time", runaway
        finally:
            pool.stop()


def _burn(precise: bool) -> None:
    timer = CpuTimer()
    if not precise:
        timer._timer = None  # the fallback
    timer.arm(1.0)
    while True:
        pass


def timer_kinds(rounds: int = 3) -> None:
    print("\n| timer, a third of a CPU, 1 s | runaway ended after: CPU s (each round) |")
    print("|---|---|")
    for precise in (True, False):
        used = []
        for _ in range(rounds):
            before = reaped_cpu_seconds()
            child = get_context("fork").Process(target=_burn, args=(precise,))
            child.start()
            with sharing_one_cpu(child.pid, 2):
                child.join(60)
                used.append(reaped_cpu_seconds() - before)
        name = "POSIX timer on CLOCK_PROCESS_CPUTIME_ID" if precise else "setitimer(ITIMER_PROF)"
        print(f"| {name} | {', '.join(f'{u:.3f}' for u in used)} |", flush=True)


def _loop_seconds(rearm: float, chunks: int) -> float:
    """Seconds of the child's loop over `chunks` chunks of 64 cached tasks."""
    reader, writer = Pipe(duplex=False)
    drain = threading.Thread(target=lambda: _drain(reader), daemon=True)
    drain.start()
    progress = RawArray("d", PROGRESS_SLOTS)
    tasks = [(n, "x*t**y + sin(x)", {"x": n, "t": 2, "y": 3}) for n in range(64)]
    limits = ExpressionLimits()
    evaluation.REARM_SECONDS = rearm
    try:
        started = time.process_time()
        for _ in range(chunks):
            progress[CUTOFF] = len(tasks)
            evaluation._calculate_chunk(writer, progress, tasks, limits, TIMER, 10.0)
        return time.process_time() - started
    finally:
        evaluation.REARM_SECONDS = SHIPPED_REARM
        writer.send(None)
        drain.join()
        writer.close()


def _drain(reader) -> None:
    while reader.recv() is not None:
        pass


SHIPPED_REARM = evaluation.REARM_SECONDS
TIMER = CpuTimer()


def timer_cost(rounds: int = 5, chunks: int = 300) -> None:
    variants = {f"armed at most every {SHIPPED_REARM * 1000:g} ms (shipped)": SHIPPED_REARM,
                "armed before every task": 0.0,
                "armed once per chunk (about no timer)": float("inf")}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, rearm in variants.items():
            seconds[name].append(_loop_seconds(rearm, chunks))
    base = statistics.median(seconds["armed once per chunk (about no timer)"])
    tasks = 64 * chunks
    print(f"\n{tasks} cached tasks per run, {rounds} rounds interleaved; CPU µs per task (median)")
    print("| child's loop | µs/task | vs once per chunk |")
    print("|---|---:|---:|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median / tasks * 1e6:.2f} | {median / base:.3f}× |")


if __name__ == "__main__":
    contention()
    timer_kinds()
    timer_cost()
