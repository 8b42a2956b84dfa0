-- Claim up to %(limit)s claimable tasks, in fair order, for one Calculator.
--
-- Fair order: coalesce(fair_round, id), then id (sql/010_api_keys_and_fair_claiming.sql):
-- keys take turns, one task each a turn, however much each one queued; rows
-- without an owner (psql, AUTH=off) by arrival. finished_at IS NULL is
-- "pending" (tasks_outcome_matches_status) as the index tasks_pending_fair says
-- it, and only so: with status = 'pending' here too, the planner could take
-- the index of pending rows by id (001) and sort every pending row, which it
-- did after an ANALYZE of a long history (believing in few pending rows):
-- 7-9 ms a claim at 20,000 pending, ~1 ms by walking tasks_pending_fair.
-- (The Calculator's session also turns bitmap scans off, for statistics
-- that believe in few rows at all: core/settings.py.)
--
-- SKIP LOCKED lets concurrent Calculators pass over each other's rows instead
-- of waiting. Each claim of a task gets a fresh lease token (the fencing token checked
-- by store_results.sql) and a lease of %(lease_seconds)s.
--
-- A task already claimed %(max_attempts)s times without an outcome has killed
-- every process that tried it; it is finished here with an error instead of
-- being handed out again; it is returned with given_up = true.
--
-- The walk starts just past (%(after_place)s, %(after_id)s), the place of the
-- last task this Calculator claimed, or, with both NULL, at the queue's head
-- (queue_head(): its oldest pending task), now and then
-- (worker/claim_frontier.py): a B-tree range scan that starts there never
-- visits the entries before it, which beside a held snapshot are the
-- entries of every task finished since (sql/011_claims_skip_what_is_finished.sql).
--
-- What a row asks is returned so that one bad row cannot hurt the Calculator:
-- the expression cut at %(max_expression_length)s + 1 characters, with its
-- real length, and the variables as JSON text cut at %(max_variables_chars)s + 1
-- characters, which the Calculator decodes and checks row by row (a row it
-- cannot read becomes that row's error outcome). With each task come its
-- attempt (1 for the first claim) and its trace context (sql/015), for the
-- Calculator's spans and log lines (worker/tracing.py), and the names of the
-- variables that are -0.0 (sql/016: jsonb holds them as 0.0), which the
-- Calculator gives their sign (worker/intake.py; signed_variables() here
-- cost a json aggregate per such row).
--
-- The lease is compared with (SELECT now()), not now(): the planner then
-- cannot read process_at's histogram for it. Statistics taken while every
-- pending task was leased (process_at in the future: a busy queue, an
-- ordinary moment for autovacuum's ANALYZE) said that almost no row is
-- claimable, and the planner chose a sequential scan and a sort of the
-- whole table for every claim, until the next ANALYZE (found by
-- tests/test_fairness.py in the full suite, where an earlier test's
-- statistics stayed: an ANALYZE of an empty table keeps the old ones).
--
-- The tenants in %(skip)s (owners, 0 for rows without an owner) are ahead
-- of the others in evaluation time (worker/fair_share.py): their tasks are
-- passed over; the Calculator claims them with an empty %(skip)s when
-- nothing else is claimable.
WITH candidates AS (
    SELECT id, attempts
    FROM tasks
    WHERE finished_at IS NULL AND process_at <= (SELECT now())
      AND (coalesce(fair_round, id), id) > (coalesce(%(after_place)s::bigint, (SELECT queue_head()) - 1),
                                            coalesce(%(after_id)s::bigint, 9223372036854775807))
      AND coalesce(owner, 0) <> ALL(%(skip)s::bigint[])
    ORDER BY coalesce(fair_round, id), id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
given_up AS (
    UPDATE tasks t
    SET status = 'error',
        error = format('gave up after %%s attempts: each claim ended without an outcome '
                       '(the evaluation process, or the Calculator, died)', t.attempts),
        finished_at = clock_timestamp()
    FROM candidates c
    WHERE t.id = c.id AND c.attempts >= %(max_attempts)s
    RETURNING t.id, t.trace_context
),
claimed AS (
    UPDATE tasks t
    SET process_at = now() + make_interval(secs => %(lease_seconds)s),
        attempts = t.attempts + 1,
        lease_token = gen_random_uuid()
    FROM candidates c
    WHERE t.id = c.id AND c.attempts < %(max_attempts)s
    RETURNING t.id, t.expression, t.variables, t.variables_negative_zero, t.lease_token, t.owner, coalesce(t.fair_round, t.id) AS fair_round,
              t.attempts, t.trace_context
)
SELECT id, left(expression, %(max_expression_length)s::integer + 1), length(expression),
       left(variables::text, %(max_variables_chars)s::integer + 1), lease_token, false AS given_up,
       owner, fair_round, attempts, trace_context, variables_negative_zero
FROM claimed
UNION ALL
SELECT id, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, trace_context, NULL FROM given_up
ORDER BY fair_round, id
