package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

// StartAttempts starts the attempts of starts in one transaction, in
// order, and returns one result for each. A task that is no longer queued,
// such as one cancelled since it was read or named twice, gets ErrConflict
// in its result and does not stop the others. Any other failure fails the
// whole call and starts nothing.
func (s *SQLite) StartAttempts(ctx context.Context, starts []AttemptStart, now time.Time) ([]StartedAttempt, error) {
	for _, start := range starts {
		if err := errors.Join(requireID("task id", start.TaskID), requireID("worker id", start.WorkerID)); err != nil {
			return nil, fmt.Errorf("start attempt of task %q: %w", start.TaskID, err)
		}
	}
	if len(starts) == 0 {
		return nil, nil
	}
	var results []StartedAttempt
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		results = make([]StartedAttempt, len(starts))
		ms := now.UnixMilli()
		for i, start := range starts {
			task, checkpoint, err := startAttemptTx(ctx, tx, start.TaskID, start.WorkerID, ms)
			switch {
			case errors.Is(err, ErrConflict):
				results[i].Err = err
			case err != nil:
				return err
			default:
				results[i] = StartedAttempt{Task: task, Checkpoint: checkpoint}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// startAttemptTx moves a queued task to running on workerID with the next
// attempt number, records the attempt and returns the task with the
// checkpoint the attempt resumes from, nil for a fresh start. The attempt's
// row names that checkpoint as its resume point. No other attempt of the
// task runs from here on, so no newer checkpoint can be stored before the
// Assign that carries this one reaches the worker.
func startAttemptTx(ctx context.Context, tx *txn, taskID, workerID string, ms int64) (*api.Task, *Checkpoint, error) {
	// not_before_ms is checked here too, because a hold for a late outcome
	// can commit after the scheduler read the task as ready.
	task, err := scanTask(tx.QueryRowContext(ctx, `UPDATE tasks SET state = ?, attempt = attempt + 1,
		worker_id = ?, updated_ms = ? WHERE id = ? AND state = ? AND not_before_ms <= ? RETURNING `+taskColumns,
		api.StateRunning, workerID, ms, taskID, api.StateQueued, ms))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("start attempt of task %s: %w: not queued, or waiting for its retry time",
			taskID, ErrConflict)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("start attempt of task %s: %w", taskID, err)
	}
	checkpoint, err := getCheckpoint(ctx, tx, taskID)
	if err != nil {
		return nil, nil, err
	}
	var resumedAttempt int
	var resumedSequence uint64
	if checkpoint != nil {
		resumedAttempt, resumedSequence = checkpoint.Attempt, checkpoint.Sequence
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO attempts (task_id, attempt, worker_id, state, started_ms,
		resumed_attempt, resumed_sequence) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		taskID, task.Attempt, workerID, AttemptRunning, ms, resumedAttempt, resumedSequence)
	if err != nil {
		return nil, nil, fmt.Errorf("record attempt %d of task %s: %w", task.Attempt, taskID, err)
	}
	return task, checkpoint, nil
}

// RunningCounts returns the number of running attempts of each worker that
// has any.
func (s *SQLite) RunningCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT a.worker_id, COUNT(*) FROM tasks t
		JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt
		WHERE t.state = ? AND a.state = ? GROUP BY a.worker_id`, api.StateRunning, AttemptRunning)
	if err != nil {
		return nil, fmt.Errorf("count running attempts: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var workerID string
		var n int
		if err := rows.Scan(&workerID, &n); err != nil {
			return nil, fmt.Errorf("count running attempts: %w", err)
		}
		counts[workerID] = n
	}
	return counts, rows.Err()
}

// GetTasks returns the tasks with the given IDs in the order of ids,
// without attempts and outcomes, as ListTasks does. It returns ErrNotFound
// when one of them does not exist.
func (s *SQLite) GetTasks(ctx context.Context, ids []string) ([]api.Task, error) {
	byID := make(map[string]api.Task, len(ids))
	for start := 0; start < len(ids); start += checkpointQueryBatch {
		batch := ids[start:min(start+checkpointQueryBatch, len(ids))]
		args := make([]any, len(batch))
		for i, id := range batch {
			args[i] = id
		}
		tasks, err := s.queryTasks(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id IN (`+
			placeholders(len(batch))+`)`, args...)
		if err != nil {
			return nil, err
		}
		for _, t := range tasks {
			byID[t.ID] = t
		}
	}
	tasks := make([]api.Task, 0, len(ids))
	for _, id := range ids {
		t, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		tasks = append(tasks, t)
	}
	if err := addCheckpointInfos(ctx, s.reader, tasks); err != nil {
		return nil, err
	}
	return tasks, nil
}
