-- Tasks, attempts, outcomes and workers. Times are Unix milliseconds.
-- The SQL stays portable to PostgreSQL: no rowid, no AUTOINCREMENT.

CREATE TABLE tasks (
    id           TEXT    PRIMARY KEY,
    seq          BIGINT  NOT NULL UNIQUE,
    batch        TEXT    NOT NULL,
    name         TEXT    NOT NULL DEFAULT '',
    type         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    timeout_ms   BIGINT  NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    worker_id    TEXT    NOT NULL DEFAULT '',
    created_ms   BIGINT  NOT NULL,
    updated_ms   BIGINT  NOT NULL
);

CREATE INDEX tasks_state_type ON tasks (state, type, seq);
CREATE INDEX tasks_batch ON tasks (batch, seq);

CREATE TABLE attempts (
    task_id    TEXT    NOT NULL REFERENCES tasks (id),
    attempt    INTEGER NOT NULL,
    worker_id  TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    started_ms BIGINT  NOT NULL,
    ended_ms   BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, attempt)
);

CREATE INDEX attempts_worker_state ON attempts (worker_id, state);

CREATE TABLE outcomes (
    task_id     TEXT    PRIMARY KEY REFERENCES tasks (id),
    attempt     INTEGER NOT NULL,
    worker_id   TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    exit_code   INTEGER NOT NULL,
    message     TEXT    NOT NULL DEFAULT '',
    output      TEXT    NOT NULL DEFAULT '',
    result      TEXT    NOT NULL DEFAULT '',
    started_ms  BIGINT  NOT NULL DEFAULT 0,
    finished_ms BIGINT  NOT NULL DEFAULT 0,
    received_ms BIGINT  NOT NULL
);

CREATE TABLE workers (
    id             TEXT    PRIMARY KEY,
    task_types     TEXT    NOT NULL,
    slots          INTEGER NOT NULL,
    labels         TEXT    NOT NULL,
    host_version   TEXT    NOT NULL DEFAULT '',
    plugin_version TEXT    NOT NULL DEFAULT '',
    last_seen_ms   BIGINT  NOT NULL
);
