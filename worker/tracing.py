"""The Calculator's spans of a task, and the trace ids in its log lines
(docs/operations.md, "Traces").

A task may carry a W3C traceparent (tasks.trace_context, sql/015: written
by the API when it traces, or by a psql user); the claim returns it with
the task's attempt number (worker/task_queue.py). With tracing configured
(core/tracing.py), every such task gets three spans in that trace, children
of the context stored with it:

    claim     the claim statement that handed it to this Calculator
    evaluate  its calculation in an evaluation process (or until the kill:
              a timeout, a cancellation, a process that died under it)
    store     the statement that stored its outcome (or found it stale)

each with calculator.task.id and calculator.task.attempt (2 and more: a
retry, after a lease that ran out or a process that died). A task given up
on after MAX_ATTEMPTS gets one claim span with an error status.

TRACING stays None without tracing: the call sites test it, and nothing
of opentelemetry is imported. Untraced tasks (no trace_context) cost a
traced Calculator one attribute test each.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Iterable

from core import tracing
from core.logs import format_ids

TRACING: "Tracing | None" = None

ID = "calculator.task.id"
ATTEMPT = "calculator.task.attempt"


def start() -> None:
    """Turn tracing on in this process if it is configured (SettingsError if
    it is configured in a way it cannot serve)."""
    global TRACING
    if TRACING is None and tracing.enabled():
        TRACING = Tracing(*tracing.tracer_provider(
            "calculator", {"service.instance.id": f"{socket.gethostname()}:{os.getpid()}"}))
        # The evaluation processes are forks of the Calculator: the SDK's
        # batch processor restarts its export thread in each (at fork), where
        # it has nothing to export but would wake up with every
        # OTEL_BSP_SCHEDULE_DELAY and take the GIL from the calculation.
        # Registered after the SDK's own handler, so this one runs after it.
        os.register_at_fork(after_in_child=_not_in_a_child)


def _not_in_a_child() -> None:
    """Let the export thread of a fork end, touching nothing else: no
    provider.shutdown(), whose exporter would take locks (its HTTP session's)
    that the Calculator's export thread may have held at the fork, for ever
    in the child. The batch processor's own flag and event, set as its
    shutdown() sets them (opentelemetry-sdk is pinned: requirements-otel.txt)."""
    global TRACING
    if TRACING is not None:
        processor, TRACING = TRACING.processor, None
        batch = getattr(processor, "_batch_processor", None)
        if batch is not None and hasattr(batch, "_worker_awaken"):
            batch._shutdown = True
            batch._worker_awaken.set()


def stop() -> None:
    """Export what is left (the process is ending)."""
    global TRACING
    if TRACING is not None:
        TRACING.provider.shutdown()
        TRACING = None


# --- log lines ------------------------------------------------------------

def trace_of(task) -> str:
    """' trace_id=...' for a log line about one task that has a trace, else ''."""
    trace = tracing.trace_id(task.trace_context)
    return f" trace_id={trace}" if trace else ""


def traces_of(tasks: Iterable) -> str:
    """' traces=TRACE:IDS;...' for a log line about several tasks (the ids
    of each trace together: a bulk submission is one trace), else ''."""
    return traces_of_ids((task.id, task.trace_context) for task in tasks)


def traces_of_ids(pairs: Iterable[tuple[int, str | None]]) -> str:
    """traces_of for (task id, traceparent) pairs."""
    by_trace: dict[str, list[int]] = {}
    for task_id, traceparent in pairs:
        if traceparent is not None:
            trace = tracing.trace_id(traceparent)
            if trace:
                by_trace.setdefault(trace, []).append(task_id)
    if not by_trace:
        return ""
    return " traces=" + ";".join(f"{trace}:{format_ids(ids)}" for trace, ids in by_trace.items())


# --- spans ----------------------------------------------------------------

class Tracing:
    def __init__(self, provider, processor):
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        self.provider, self.processor = provider, processor
        self.tracer = provider.get_tracer("calculator-service.calculator")
        self._extract = TraceContextTextMapPropagator().extract
        self._kind = SpanKind.INTERNAL
        self._error = lambda message: Status(StatusCode.ERROR, message)

    def _parent(self, task):
        """The task's stored context, read once (its three spans share it)."""
        if task.trace_parent is None:
            task.trace_parent = self._extract({"traceparent": task.trace_context})
        return task.trace_parent

    def _span(self, name: str, parent, task_id: int, attempt: int | None,
              start_ns: int, end_ns: int, error: str | None = None, **attributes) -> None:
        attributes[ID] = task_id
        if attempt is not None:
            attributes[ATTEMPT] = attempt
        span = self.tracer.start_span(name, context=parent, kind=self._kind, attributes=attributes,
                                      start_time=start_ns)
        if error is not None:
            span.set_status(self._error(error))
        span.end(end_time=end_ns)

    def claimed(self, tasks, given_up, start_ns: int, end_ns: int) -> None:
        for task in tasks:
            if task.trace_context is not None:
                self._span("claim", self._parent(task), task.id, task.attempt, start_ns, end_ns,
                           task.problem)
        for task_id, traceparent in given_up.trace_contexts.items():
            self._span("claim", self._extract({"traceparent": traceparent}), task_id, None, start_ns, end_ns,
                       "gave up: every claim of the task ended without an outcome")

    def evaluated(self, task, seconds: float, error: str | None = None, killed: str | None = None) -> None:
        """An evaluation ended now, after seconds: with the task's outcome
        (error: its error message), or killed (the cause)."""
        if task.trace_context is None:
            return
        end = time.time_ns()
        attributes = {"calculator.task.killed": killed} if killed else {}
        self._span("evaluate", self._parent(task), task.id, task.attempt, end - int(seconds * 1e9), end,
                   error, **attributes)

    def stored(self, outcomes, stored: set, locked: set, start_ns: int, end_ns: int) -> None:
        for outcome in outcomes:
            task = outcome.task
            if task.trace_context is None:
                continue
            parent = self._parent(task)
            if task.id in stored:
                self._span("store", parent, task.id, task.attempt, start_ns, end_ns,
                           **{"calculator.task.status": "error" if outcome.error is not None else "done"})
            elif task.id in locked:
                self._span("store", parent, task.id, task.attempt, start_ns, end_ns,
                           **{"calculator.task.held_back": True})
            else:
                self._span("store", parent, task.id, task.attempt, start_ns, end_ns,
                           "stale: another Calculator holds or finished the task")
