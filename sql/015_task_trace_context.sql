-- Each task may carry the W3C trace context (a `traceparent`) of the request
-- that submitted it, so that the Calculator's spans of that task (its claim,
-- evaluation and store) join the request's trace (docs/operations.md,
-- "Traces"). The API fills it in only when tracing is configured; a psql
-- user may set it too, to follow a task of their own:
--
--   INSERT INTO tasks (expression, trace_context)
--   VALUES ('2+2', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
--
-- NULL (the default): no trace. A value must be a version-00 traceparent
-- (lower-case hex, neither id all zeros), as the W3C Trace Context
-- recommendation writes it: anything else is refused here, not discovered
-- by a Calculator.
ALTER TABLE tasks ADD COLUMN trace_context text;

-- NOT VALID: every existing row holds NULL (the column is new), so there is
-- nothing to check, and a long history is not scanned under this ALTER's
-- lock; new and updated rows are checked all the same.
ALTER TABLE tasks ADD CONSTRAINT tasks_trace_context_is_a_traceparent
    CHECK (trace_context ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
           AND substr(trace_context, 4, 32) <> repeat('0', 32)
           AND substr(trace_context, 37, 16) <> repeat('0', 16)) NOT VALID;

GRANT INSERT (trace_context) ON tasks TO calculator_api;
