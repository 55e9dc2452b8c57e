-- Worker sessions saved by a coordinator that shut down, so that their
-- workers can resume them after the restart. A starting coordinator takes
-- and deletes them in one transaction; state is opaque to the store.

CREATE TABLE saved_sessions (
    id        TEXT   PRIMARY KEY,
    worker_id TEXT   NOT NULL,
    state     BLOB   NOT NULL,
    saved_ms  BIGINT NOT NULL
);
