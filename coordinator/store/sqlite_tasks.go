package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

const taskColumns = `id, batch, name, type, payload, timeout_ms, max_attempts, state, attempt,
	worker_id, created_ms, updated_ms`

func scanTask(row interface{ Scan(...any) error }) (*api.Task, error) {
	var (
		t                api.Task
		payload          string
		created, updated int64
	)
	err := row.Scan(&t.ID, &t.Batch, &t.Name, &t.Type, &payload, &t.TimeoutMS, &t.MaxAttempts,
		&t.State, &t.Attempt, &t.WorkerID, &created, &updated)
	if err != nil {
		return nil, err
	}
	t.Payload = json.RawMessage(payload)
	t.Created = fromMillis(created)
	t.Updated = fromMillis(updated)
	return &t, nil
}

// CreateTasks inserts queued tasks in one transaction. The seq column keeps
// their creation order, which ListTasks and QueuedTasks follow.
func (s *SQLite) CreateTasks(ctx context.Context, tasks []NewTask, now time.Time) error {
	if err := validateNewTasks(tasks); err != nil {
		return fmt.Errorf("create tasks: %w", err)
	}
	if len(tasks) == 0 {
		return nil
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var seq int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM tasks`).Scan(&seq); err != nil {
			return fmt.Errorf("read task sequence: %w", err)
		}
		ms := now.UnixMilli()
		for _, t := range tasks {
			seq++
			_, err := tx.ExecContext(ctx, `INSERT INTO tasks (id, seq, batch, name, type, payload,
				timeout_ms, max_attempts, state, attempt, worker_id, created_ms, updated_ms)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?)`,
				t.ID, seq, t.Batch, t.Name, t.Type, string(t.Payload), t.TimeoutMS, t.MaxAttempts,
				api.StateQueued, ms, ms)
			if err != nil {
				return fmt.Errorf("insert task %s: %w", t.ID, err)
			}
		}
		return nil
	})
}

// GetTask returns a task with its attempts and outcome.
func (s *SQLite) GetTask(ctx context.Context, id string) (*api.Task, error) {
	if err := requireID("task id", id); err != nil {
		return nil, fmt.Errorf("get task: %w", err)
	}
	return getTask(ctx, s.read, id, true)
}

func getTask(ctx context.Context, q queryer, id string, details bool) (*api.Task, error) {
	task, err := scanTask(q.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read task %s: %w", id, err)
	}
	if !details {
		return task, nil
	}
	if task.Attempts, err = listAttempts(ctx, q, id); err != nil {
		return nil, err
	}
	if task.Outcome, err = getOutcome(ctx, q, id); err != nil {
		return nil, err
	}
	return task, nil
}

func listAttempts(ctx context.Context, q queryer, taskID string) ([]api.Attempt, error) {
	rows, err := q.QueryContext(ctx, `SELECT attempt, worker_id, state, reason, started_ms, ended_ms
		FROM attempts WHERE task_id = ? ORDER BY attempt`, taskID)
	if err != nil {
		return nil, fmt.Errorf("read attempts of task %s: %w", taskID, err)
	}
	defer rows.Close()
	var attempts []api.Attempt
	for rows.Next() {
		var a api.Attempt
		var started, ended int64
		if err := rows.Scan(&a.Attempt, &a.WorkerID, &a.State, &a.Reason, &started, &ended); err != nil {
			return nil, fmt.Errorf("read attempts of task %s: %w", taskID, err)
		}
		a.Started = fromMillis(started)
		a.Ended = fromMillis(ended)
		attempts = append(attempts, a)
	}
	return attempts, rows.Err()
}

func getOutcome(ctx context.Context, q queryer, taskID string) (*api.Outcome, error) {
	var (
		o                 api.Outcome
		result            string
		started, finished int64
	)
	err := q.QueryRowContext(ctx, `SELECT attempt, worker_id, status, exit_code, message, output,
		result, started_ms, finished_ms FROM outcomes WHERE task_id = ?`, taskID).Scan(
		&o.Attempt, &o.WorkerID, &o.Status, &o.ExitCode, &o.Message, &o.Output, &result,
		&started, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read outcome of task %s: %w", taskID, err)
	}
	if result != "" {
		o.Result = json.RawMessage(result)
	}
	o.Started = fromMillis(started)
	o.Finished = fromMillis(finished)
	return &o, nil
}

// ListTasks returns the tasks that match filter in creation order.
func (s *SQLite) ListTasks(ctx context.Context, filter TaskFilter) ([]api.Task, error) {
	query := `SELECT ` + taskColumns + ` FROM tasks WHERE 1 = 1`
	var args []any
	if filter.Batch != "" {
		query += ` AND batch = ?`
		args = append(args, filter.Batch)
	}
	if filter.State != "" {
		query += ` AND state = ?`
		args = append(args, filter.State)
	}
	return s.queryTasks(ctx, query+` ORDER BY seq`, args...)
}

// QueuedTasks returns up to limit queued tasks of the given types, oldest
// first.
func (s *SQLite) QueuedTasks(ctx context.Context, types []string, limit int) ([]api.Task, error) {
	if len(types) == 0 || limit <= 0 {
		return nil, nil
	}
	args := []any{api.StateQueued}
	for _, t := range types {
		args = append(args, t)
	}
	args = append(args, limit)
	query := `SELECT ` + taskColumns + ` FROM tasks WHERE state = ? AND type IN (` +
		placeholders(len(types)) + `) ORDER BY seq LIMIT ?`
	return s.queryTasks(ctx, query, args...)
}

func (s *SQLite) queryTasks(ctx context.Context, query string, args ...any) ([]api.Task, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	tasks := []api.Task{}
	for rows.Next() {
		task, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks: %w", err)
		}
		tasks = append(tasks, *task)
	}
	return tasks, rows.Err()
}

// StartAttempt moves a queued task to running with the next attempt number.
func (s *SQLite) StartAttempt(ctx context.Context, taskID, workerID string, now time.Time) (*api.Task, error) {
	if err := errors.Join(requireID("task id", taskID), requireID("worker id", workerID)); err != nil {
		return nil, fmt.Errorf("start attempt of task %q: %w", taskID, err)
	}
	var task *api.Task
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		ms := now.UnixMilli()
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, attempt = attempt + 1,
			worker_id = ?, updated_ms = ? WHERE id = ? AND state = ?`,
			api.StateRunning, workerID, ms, taskID, api.StateQueued)
		if err != nil {
			return fmt.Errorf("start attempt of task %s: %w", taskID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("start attempt of task %s: %w: not queued", taskID, ErrConflict)
		}
		if task, err = getTask(ctx, tx, taskID, false); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO attempts (task_id, attempt, worker_id, state,
			started_ms) VALUES (?, ?, ?, ?, ?)`, taskID, task.Attempt, workerID, AttemptRunning, ms)
		if err != nil {
			return fmt.Errorf("record attempt %d of task %s: %w", task.Attempt, taskID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return task, nil
}

// LoseAttempt ends a running attempt as lost and queues the task again, or
// fails it when the attempt was its last.
func (s *SQLite) LoseAttempt(ctx context.Context, taskID string, attempt int, reason string,
	now time.Time) (*api.Task, error) {
	if err := requireID("task id", taskID); err != nil {
		return nil, fmt.Errorf("lose attempt %d: %w", attempt, err)
	}
	var task *api.Task
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		current, err := getTask(ctx, tx, taskID, false)
		if err != nil {
			return err
		}
		if current.State != api.StateRunning || current.Attempt != attempt {
			return fmt.Errorf("lose attempt %d of task %s: %w: task is %s at attempt %d",
				attempt, taskID, ErrConflict, current.State, current.Attempt)
		}
		ms := now.UnixMilli()
		next := api.StateQueued
		reason = lostReason(reason)
		if attempt >= current.MaxAttempts {
			next = api.StateFailed
			reason += fmt.Sprintf("; task failed after %d of %d attempts", attempt, current.MaxAttempts)
		}
		if err := endAttempt(ctx, tx, taskID, attempt, AttemptLost, reason, ms); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, worker_id = '', updated_ms = ?
			WHERE id = ?`, next, ms, taskID); err != nil {
			return fmt.Errorf("requeue task %s: %w", taskID, err)
		}
		task, err = getTask(ctx, tx, taskID, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	return task, nil
}

// lostReason prefixes the reason of a lost attempt with "lost: ", so every
// lost attempt reads the same in the API, whichever caller ended it.
func lostReason(reason string) string {
	const prefix = "lost: "
	switch {
	case reason == "":
		return prefix + "no reason given"
	case strings.HasPrefix(reason, prefix):
		return reason
	default:
		return prefix + reason
	}
}

func endAttempt(ctx context.Context, tx *sql.Tx, taskID string, attempt int, state, reason string,
	ms int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE attempts SET state = ?, reason = ?, ended_ms = ?
		WHERE task_id = ? AND attempt = ?`, state, reason, ms, taskID, attempt)
	if err != nil {
		return fmt.Errorf("end attempt %d of task %s: %w", attempt, taskID, err)
	}
	return nil
}

// ApplyOutcome records an outcome when it is fenced by the task's running
// attempt and worker, and sets the task's terminal state in the same
// transaction.
func (s *SQLite) ApplyOutcome(ctx context.Context, o Outcome, now time.Time) (OutcomeResult, error) {
	if err := validateOutcome(o); err != nil {
		return OutcomeResult{}, err
	}
	var result OutcomeResult
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		current, err := getTask(ctx, tx, o.TaskID, false)
		if errors.Is(err, ErrNotFound) {
			result = OutcomeResult{Reason: fmt.Sprintf("unknown task %s", o.TaskID)}
			return nil
		}
		if err != nil {
			return err
		}
		reason, err := fence(ctx, tx, current, o)
		if err != nil {
			return err
		}
		if reason != "" {
			result = OutcomeResult{Reason: reason, Task: current}
			return nil
		}

		ms := now.UnixMilli()
		_, err = tx.ExecContext(ctx, `INSERT INTO outcomes (task_id, attempt, worker_id, status,
			exit_code, message, output, result, started_ms, finished_ms, received_ms)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			o.TaskID, o.Attempt, o.WorkerID, o.Status, o.ExitCode, o.Message, o.Output,
			string(o.Result), toMillis(o.Started), toMillis(o.Finished), ms)
		if err != nil {
			return fmt.Errorf("insert outcome of task %s: %w", o.TaskID, err)
		}
		if err := endAttempt(ctx, tx, o.TaskID, o.Attempt, o.Status, "", ms); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, updated_ms = ? WHERE id = ?`,
			o.Status, ms, o.TaskID); err != nil {
			return fmt.Errorf("finish task %s: %w", o.TaskID, err)
		}
		task, err := getTask(ctx, tx, o.TaskID, false)
		result = OutcomeResult{Applied: true, Task: task}
		return err
	})
	if err != nil {
		return OutcomeResult{}, err
	}
	return result, nil
}

// fence returns why an outcome may not change the task, or "" when the
// outcome is from the task's running attempt on the worker that runs it.
// The checks run in the transaction that applies the outcome, which holds
// the write lock from BEGIN, so no change lands between check and write.
func fence(ctx context.Context, tx *sql.Tx, task *api.Task, o Outcome) (string, error) {
	switch {
	case o.Attempt < task.Attempt:
		return fmt.Sprintf("stale attempt %d, current attempt is %d", o.Attempt, task.Attempt), nil
	case o.Attempt > task.Attempt:
		return fmt.Sprintf("unknown attempt %d, current attempt is %d", o.Attempt, task.Attempt), nil
	case task.State == api.StateRunning && task.WorkerID != o.WorkerID:
		return fmt.Sprintf("attempt %d runs on worker %s, not %s", o.Attempt, task.WorkerID, o.WorkerID), nil
	case task.State == api.StateRunning:
		return "", nil
	}

	existing, err := getOutcome(ctx, tx, task.ID)
	if err != nil {
		return "", err
	}
	if existing != nil && existing.Attempt == o.Attempt && existing.WorkerID == o.WorkerID {
		return fmt.Sprintf("duplicate: outcome of attempt %d already applied", o.Attempt), nil
	}
	return fmt.Sprintf("task is %s", task.State), nil
}

// CancelTask cancels a queued or running task; a running attempt ends as
// cancelled at once and its later outcome is rejected by the fence.
func (s *SQLite) CancelTask(ctx context.Context, id, reason string, now time.Time) (*api.Task, error) {
	if err := requireID("task id", id); err != nil {
		return nil, fmt.Errorf("cancel task: %w", err)
	}
	var before *api.Task
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if before, err = getTask(ctx, tx, id, false); err != nil {
			return err
		}
		if api.Terminal(before.State) {
			return &terminalError{id: id, state: before.State}
		}
		ms := now.UnixMilli()
		if before.State == api.StateRunning {
			if err := endAttempt(ctx, tx, id, before.Attempt, api.StateCancelled, reason, ms); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE tasks SET state = ?, updated_ms = ? WHERE id = ?`,
			api.StateCancelled, ms, id)
		if err != nil {
			return fmt.Errorf("cancel task %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return before, nil
}

// RunningAttempts returns the running attempts of one worker or of all.
func (s *SQLite) RunningAttempts(ctx context.Context, workerID string) ([]RunningAttempt, error) {
	query := `SELECT a.task_id, a.attempt, a.worker_id, a.started_ms FROM attempts a
		JOIN tasks t ON t.id = a.task_id AND t.attempt = a.attempt
		WHERE t.state = ? AND a.state = ?`
	args := []any{api.StateRunning, AttemptRunning}
	if workerID != "" {
		query += ` AND a.worker_id = ?`
		args = append(args, workerID)
	}
	rows, err := s.read.QueryContext(ctx, query+` ORDER BY t.seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("list running attempts: %w", err)
	}
	defer rows.Close()
	var running []RunningAttempt
	for rows.Next() {
		var r RunningAttempt
		var started int64
		if err := rows.Scan(&r.TaskID, &r.Attempt, &r.WorkerID, &started); err != nil {
			return nil, fmt.Errorf("list running attempts: %w", err)
		}
		r.Started = fromMillis(started)
		running = append(running, r)
	}
	return running, rows.Err()
}
