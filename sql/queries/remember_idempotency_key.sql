-- Record an Idempotency-Key of one API key (owner; 0 without keys) with the ids its request created, in the
-- transaction that inserted them. No row back means the key is already taken
-- by a request of the last 24 hours (if that request is still in flight, this
-- waits for its commit): the caller rolls back and answers from find_idempotency_key.
INSERT INTO idempotency_keys (owner, key, fingerprint, expression_ids)
VALUES (%(owner)s, %(key)s, %(fingerprint)s, %(expression_ids)s)
ON CONFLICT (owner, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint,
        expression_ids = EXCLUDED.expression_ids,
        created_at = now()
    WHERE idempotency_keys.created_at < now() - interval '24 hours'
RETURNING key
