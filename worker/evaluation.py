"""The evaluation child process: calculates chunks of tasks sent by its Calculator.

A child lives across many tasks. Before each task it arms a timer on its
own CPU time (cpu_timer.py) with CALCULATION_TIMEOUT, and writes the task's
index and start time into shared memory, so that the parent can tell,
without any message, which task a child is busy with and for how long.

CALCULATION_TIMEOUT counts the CPU time of this process: when a task has used
it up, the kernel delivers SIGPROF, whose default action ends the process at
once (a computation stuck in C included: no Python handler has to run). The
parent sees the death by SIGPROF and knows from shared memory which task was
the runaway (evaluators.py). The kernel checks the timer at every scheduler
tick, so the end comes within a few milliseconds of CPU time after the
timeout, whatever else the machine runs; a process that waits for the CPU
uses none of its budget. (RLIMIT_CPU counts whole seconds, over the process's
whole life; reading /proc/PID/stat or the process's CPU clock from the parent
means polling each busy child, in 10 ms ticks for /proc.) The timer is armed
again before a task only when at least REARM_SECONDS of wall-clock time
passed since it last was (a system call, ~1 us, is a good part of a cached
quick task's cost): CPU time never runs faster than the wall clock, so every
task starts with between CALCULATION_TIMEOUT - REARM_SECONDS and
CALCULATION_TIMEOUT of CPU time left. The parent keeps the wall-clock ceiling
(CALCULATION_WALL_TIMEOUT), for a process that does not get to use the CPU.

Results go back in batches (every few milliseconds and at the end of a
chunk), which keeps the cost per task of the pipe small.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import resource
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from core.expression import (CalculationError, CompiledExpression, ExpressionError,
                             check_variables, compile_expression, number_to_json)
from core.parse_cache import ParseCache
from core.settings import ExpressionLimits
from worker.cpu_timer import CpuTimer

# Slots of the shared progress array (doubles).
STARTED = 0     # index in the chunk of the task being calculated; -1 when idle
STARTED_AT = 1  # time.monotonic() when it started (the same clock in every process)
CUTOFF = 2      # written by the parent: do not start tasks at this index or later
CPU_AT = 3      # time.process_time() when it started: the CPU seconds the process had used
PROGRESS_SLOTS = 4

CANNOT_RECEIVE = 3  # exit code of a child that could not receive its chunk

FLUSH_SECONDS = 0.002
REARM_SECONDS = 0.001
PARSE_CACHE_BYTES = 32 * 1024 * 1024
# The outcome of a calculation stopped by MEMORY_LIMIT_MB (the Calculator
# counts these as tasks killed by the memory cap: worker/metrics.py).
OUT_OF_MEMORY = "out of memory: the calculation needs too much memory"


def calculate(expression: Any, variables: Any, limits: ExpressionLimits) -> tuple[str | None, str | None]:
    """(result as JSON text, None) or (None, error message) for one task."""
    try:
        compiled = _compile(expression, limits.max_expression_length)
        values = check_variables(compiled, variables, limits.max_variables)
        return number_to_json(compiled.evaluate(values)), None
    except (ExpressionError, CalculationError) as error:
        return None, str(error)
    except MemoryError:
        return None, OUT_OF_MEMORY


def _compile(expression: Any, max_length: int) -> CompiledExpression:
    if not isinstance(expression, str):  # e.g. NULL inserted with psql
        return compile_expression(expression, max_length)
    compiled, error = _PARSE_CACHE.get(expression, max_length)
    if error is not None:
        raise ExpressionError(error)
    return compiled


_PARSE_CACHE = ParseCache(PARSE_CACHE_BYTES)


def run_child(conn: Connection, progress, limits: ExpressionLimits, memory_limit_mb: int,
              cpu_timeout: float) -> None:
    """Main loop of an evaluation process: chunks in, results out, until None."""
    signal.set_wakeup_fd(-1)  # inherited from the Calculator with fork
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    _die_with_parent()
    timer = CpuTimer()  # the CPU timeout: SIGPROF, which ends the process
    if memory_limit_mb > 0:
        cap = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    progress[STARTED] = -1
    while True:
        try:
            tasks = conn.recv()
        except MemoryError:
            # A chunk too big to receive under MEMORY_LIMIT_MB: die quietly
            # before starting it; the parent splits the chunk to find the culprit.
            os._exit(CANNOT_RECEIVE)
        if tasks is None:
            return
        _calculate_chunk(conn, progress, tasks, limits, timer, cpu_timeout)


def _die_with_parent() -> None:
    # A child busy in a runaway calculation never reads its pipe; without this
    # it would outlive a Calculator killed with SIGKILL and burn a core.
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe EOF still ends idle children
        pass
    # A Calculator killed between the fork and the prctl sends no signal, and
    # the pipe gives no EOF either (sibling children hold its other end).
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(0)


def _calculate_chunk(conn: Connection, progress, tasks, limits, timer: CpuTimer,
                     cpu_timeout: float) -> None:
    results = []
    last_flush = time.monotonic()
    armed_at = -math.inf
    for index, (task_id, expression, variables) in enumerate(tasks):
        if results and time.monotonic() - last_flush >= FLUSH_SECONDS:
            conn.send(("results", results))  # may block while the parent is busy
            results, last_flush = [], time.monotonic()
        # After the send: the parent may take the rest back when it reads
        # these results (it then sees the last task's index, not this one's).
        if index >= progress[CUTOFF]:
            break
        # The clock is read only now, after any send: the task starts here.
        started = time.monotonic()
        # The CPU budget first (the clock read before arming: at least as much
        # wall-clock time, so at least as much CPU time, has passed since the
        # timer was armed), the progress second: if the timer fires, the index
        # in shared memory is the task that used the budget up.
        if started - armed_at >= REARM_SECONDS:
            timer.arm(cpu_timeout)
            armed_at = started
        # Start times first, index second; the parent reads them in the
        # opposite order, so when it sees this index it sees these start times.
        cpu_started = time.process_time()
        progress[CPU_AT] = cpu_started
        progress[STARTED_AT] = started
        progress[STARTED] = index
        result, error = calculate(expression, variables, limits)
        # The seconds it took go back too: wall-clock for the Calculator's
        # evaluation histogram, CPU time for the tenant's share (fair_share.py).
        results.append((task_id, result, error, time.monotonic() - started, time.process_time() - cpu_started))
    timer.arm(0)  # idle: receiving the next chunk is no task's
    progress[STARTED] = -1
    conn.send(("done", results))
