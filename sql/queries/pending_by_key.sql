-- /metrics: each key's pending tasks and the age of its oldest, for the
-- %(top)s keys with the most pending tasks; the other keys' together as one
-- row (key NULL, other true), and rows without an owner (psql, AUTH=off) as
-- one row (key NULL, other false). So the label's values stay at most
-- top + 2 however many keys there are. Reads the pending rows once (the
-- queue, not the history: the partial index of pending tasks by owner).
WITH per_owner AS (
    SELECT owner, count(*) AS pending, extract(epoch FROM now() - min(created_at))::float8 AS oldest_seconds
    FROM tasks
    WHERE status = 'pending'
    GROUP BY owner
),
ranked AS (
    SELECT *, row_number() OVER (ORDER BY pending DESC, owner) AS place
    FROM per_owner WHERE owner IS NOT NULL
)
SELECT k.name AS key, false AS other, r.pending, r.oldest_seconds
FROM ranked r JOIN api_keys k ON k.id = r.owner
WHERE r.place <= %(top)s
UNION ALL
SELECT NULL, true, sum(pending), max(oldest_seconds) FROM ranked WHERE place > %(top)s HAVING count(*) > 0
UNION ALL
SELECT NULL, false, pending, oldest_seconds FROM per_owner WHERE owner IS NULL
