-- Idempotent submission (the IETF httpapi draft "The Idempotency-Key HTTP
-- Header Field"): a client that lost the answer to a POST sends it again with
-- the same Idempotency-Key and gets the first answer instead of a second task.
--
-- One row per key: what the request was (a SHA-256 of method, path and body)
-- and the ids it created. A key is remembered for 24 hours; after that it may
-- be used afresh (the row is replaced) and the API sweeps old rows away.
CREATE TABLE idempotency_keys (
    key            text        PRIMARY KEY,
    fingerprint    bytea       NOT NULL,
    expression_ids bigint[]    NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_key_length CHECK (length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_fingerprint_is_sha256 CHECK (length(fingerprint) = 32)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- The API's own table: it records keys, replaces expired ones and sweeps them.
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO calculator_api;
