-- GET /api/tasks for one key: its tasks of the statuses asked for (an
-- array), newest first (by id), below the cursor's id, created in
-- [since, until) (NULL: no bound), at most limit of them. One branch per
-- status, each a walk of tasks_listing_by_owner (sql/013) that stops after
-- limit rows; a status not asked for is not walked (its branch's one-time
-- filter is false). Pending tasks are the key's pending tasks from the
-- queue's head (tasks_pending_by_owner, queue_head(): sql/010, sql/011),
-- sorted by id: at most the key's unfinished tasks (MAX_PENDING_PER_KEY).
--
-- Each branch names its rows as a range of that index's keys, from
-- (owner, status, 0) to (owner, status, cursor), in its order: nothing else
-- can serve it (owner = ... and status = ... once more prove the index's
-- predicate). Written as owner = ... AND status = 'done', the planner could
-- (and, with two keys of 20,000 tasks each, did) walk the index of everyone's
-- done tasks (sql/013) instead, filtering out the other key's newer tasks:
-- 20,000 rows read for a page (tests/test_listing.py).
-- Variables and result as json, each -0.0 with its sign (sql/016).
SELECT t.id, t.status, t.expression, signed_variables(t.variables, t.variables_negative_zero) AS variables,
       signed_result(t.result, t.result_negative_zero) AS result,
       t.error, t.attempts,
       t.created_at, t.finished_at,
       extract(epoch FROM t.finished_at - t.created_at)::float8 AS seconds,
       t.status = 'pending' AND t.lease_token IS NOT NULL AND t.process_at > now() AS leased,
       (SELECT k.name FROM api_keys k WHERE k.id = t.owner) AS owner_name
FROM (
    (SELECT * FROM tasks t
     WHERE t.owner = %(owner)s::bigint AND t.owner IS NOT NULL AND t.status = 'pending'
       AND t.fair_round >= (SELECT queue_head()) AND t.id < %(before)s
       AND 'pending' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM tasks t
     WHERE t.owner = %(owner)s::bigint AND t.status = 'done'
       AND (t.owner, t.status, t.id) > (%(owner)s::bigint, 'done', 0)
       AND (t.owner, t.status, t.id) < (%(owner)s::bigint, 'done', %(before)s)
       AND 'done' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.owner DESC, t.status DESC, t.id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM tasks t
     WHERE t.owner = %(owner)s::bigint AND t.status = 'error'
       AND (t.owner, t.status, t.id) > (%(owner)s::bigint, 'error', 0)
       AND (t.owner, t.status, t.id) < (%(owner)s::bigint, 'error', %(before)s)
       AND 'error' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.owner DESC, t.status DESC, t.id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM tasks t
     WHERE t.owner = %(owner)s::bigint AND t.status = 'cancelled'
       AND (t.owner, t.status, t.id) > (%(owner)s::bigint, 'cancelled', 0)
       AND (t.owner, t.status, t.id) < (%(owner)s::bigint, 'cancelled', %(before)s)
       AND 'cancelled' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.owner DESC, t.status DESC, t.id DESC LIMIT %(limit)s)
) AS t
ORDER BY t.id DESC
LIMIT %(limit)s
