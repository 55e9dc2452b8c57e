-- Retry backoff, released attempts and required worker labels.
--
-- not_before_ms is the earliest time a queued task may be handed out again,
-- set from the retry backoff when an attempt fails; 0 means at once.
-- released counts the attempts that a draining worker gave back, which do
-- not count against max_attempts. labels is the JSON object of labels a
-- worker must have to run the task, kept for reading; task_labels holds the
-- same pairs in a form the scheduler's query can match.

ALTER TABLE tasks ADD COLUMN not_before_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';

-- by_outcome is 1 for an attempt ended by its worker's outcome, so that
-- the same outcome sent again is recognised as a duplicate even after the
-- task moved on to a later attempt.
ALTER TABLE attempts ADD COLUMN by_outcome INTEGER NOT NULL DEFAULT 0;

CREATE TABLE task_labels (
    task_id TEXT NOT NULL REFERENCES tasks (id),
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (task_id, name)
);
