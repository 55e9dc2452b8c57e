-- Checkpoints: the newest stored checkpoint of each task, with its data,
-- and the history of every stored checkpoint without data. The history
-- lets a checker prove that a task's checkpoint never moved backwards:
-- position counts the checkpoints of a task in the order they were
-- stored, and (attempt, sequence) must grow with it.

CREATE TABLE checkpoints (
    task_id   TEXT             PRIMARY KEY REFERENCES tasks (id),
    attempt   INTEGER          NOT NULL,
    sequence  BIGINT           NOT NULL,
    data      BLOB             NOT NULL,
    fraction  DOUBLE PRECISION NOT NULL DEFAULT 0,
    message   TEXT             NOT NULL DEFAULT '',
    size      INTEGER          NOT NULL,
    saved_ms  BIGINT           NOT NULL,
    stored_ms BIGINT           NOT NULL
);

CREATE TABLE checkpoint_history (
    task_id   TEXT    NOT NULL REFERENCES tasks (id),
    position  INTEGER NOT NULL,
    attempt   INTEGER NOT NULL,
    sequence  BIGINT  NOT NULL,
    size      INTEGER NOT NULL,
    saved_ms  BIGINT  NOT NULL,
    stored_ms BIGINT  NOT NULL,
    PRIMARY KEY (task_id, position)
);

-- resumed_attempt and resumed_sequence name the checkpoint an attempt was
-- handed when it started; both are 0 for a fresh start.
ALTER TABLE attempts ADD COLUMN resumed_attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN resumed_sequence BIGINT NOT NULL DEFAULT 0;
