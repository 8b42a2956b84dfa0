-- python -m api.keys revoke NAME --cancel-pending: the revoked key's
-- unfinished tasks are cancelled (cancel_tasks tells the Calculators).
SELECT count(*) FILTER (WHERE cancelled_now)
FROM cancel_tasks(ARRAY(SELECT id FROM tasks
                        WHERE owner = %(owner)s AND status = 'pending' AND owner IS NOT NULL),
                  %(owner)s)
