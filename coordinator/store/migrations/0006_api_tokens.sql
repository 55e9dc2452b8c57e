-- Bearer tokens of the HTTP API. Only the SHA-256 hash of a token is
-- stored; a token is 32 random bytes, so the hash cannot be reversed by
-- guessing. expires_ms and revoked_ms are 0 while unset.

CREATE TABLE api_tokens (
    token_id   TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL DEFAULT '',
    role       TEXT   NOT NULL,
    hash       BLOB   NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL DEFAULT 0,
    revoked_ms BIGINT NOT NULL DEFAULT 0
);
