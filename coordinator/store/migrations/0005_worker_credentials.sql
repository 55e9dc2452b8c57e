-- Worker credentials: SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677). The
-- secret itself is never stored; stored_key and server_key cannot be used
-- to log in. expires_ms and revoked_ms are 0 while unset.

CREATE TABLE worker_credentials (
    credential_id TEXT    PRIMARY KEY,
    worker_id     TEXT    NOT NULL,
    salt          BLOB    NOT NULL,
    iterations    INTEGER NOT NULL,
    stored_key    BLOB    NOT NULL,
    server_key    BLOB    NOT NULL,
    created_ms    BIGINT  NOT NULL,
    expires_ms    BIGINT  NOT NULL DEFAULT 0,
    revoked_ms    BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX worker_credentials_by_worker ON worker_credentials (worker_id);
