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
	worker_id, created_ms, updated_ms, not_before_ms, released, labels`

func scanTask(row interface{ Scan(...any) error }) (*api.Task, error) {
	var (
		t                           api.Task
		payload, labels             string
		created, updated, notBefore int64
	)
	err := row.Scan(&t.ID, &t.Batch, &t.Name, &t.Type, &payload, &t.TimeoutMS, &t.MaxAttempts,
		&t.State, &t.Attempt, &t.WorkerID, &created, &updated, &notBefore, &t.Released, &labels)
	if err != nil {
		return nil, err
	}
	t.Payload = json.RawMessage(payload)
	t.Created = fromMillis(created)
	t.Updated = fromMillis(updated)
	if t.State == api.StateQueued {
		t.NotBefore = fromMillis(notBefore)
	}
	if labels != "" && labels != "{}" {
		if err := json.Unmarshal([]byte(labels), &t.Labels); err != nil {
			return nil, fmt.Errorf("read labels of task %s: %w", t.ID, err)
		}
	}
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
	return s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		var seq int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM tasks`).Scan(&seq); err != nil {
			return fmt.Errorf("read task sequence: %w", err)
		}
		ms := now.UnixMilli()
		for _, t := range tasks {
			seq++
			labels, err := json.Marshal(t.Labels)
			if err != nil || len(t.Labels) == 0 {
				labels = []byte("{}")
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO tasks (id, seq, batch, name, type, payload,
				timeout_ms, max_attempts, state, attempt, worker_id, created_ms, updated_ms, labels)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?, ?)`,
				t.ID, seq, t.Batch, t.Name, t.Type, string(t.Payload), t.TimeoutMS, t.MaxAttempts,
				api.StateQueued, ms, ms, string(labels))
			if err != nil {
				return fmt.Errorf("insert task %s: %w", t.ID, err)
			}
			if err := insertLabels(ctx, tx, t.ID, t.Labels); err != nil {
				return err
			}
		}
		return nil
	})
}

// insertLabels records a task's required labels one row each, the form
// that QueuedTasks matches against a worker's labels.
func insertLabels(ctx context.Context, tx *txn, taskID string, labels map[string]string) error {
	for name, value := range labels {
		_, err := tx.ExecContext(ctx, `INSERT INTO task_labels (task_id, name, value) VALUES (?, ?, ?)`,
			taskID, name, value)
		if err != nil {
			return fmt.Errorf("insert label %s of task %s: %w", name, taskID, err)
		}
	}
	return nil
}

// GetTask returns a task with its attempts and outcome.
func (s *SQLite) GetTask(ctx context.Context, id string) (*api.Task, error) {
	if err := requireID("task id", id); err != nil {
		return nil, fmt.Errorf("get task: %w", err)
	}
	return getTask(ctx, s.reader, id, true)
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
	if err := addCheckpointDetails(ctx, q, task); err != nil {
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
	tasks, err := s.queryTasks(ctx, query+` ORDER BY seq`, args...)
	if err != nil {
		return nil, err
	}
	if err := addCheckpointInfos(ctx, s.reader, tasks); err != nil {
		return nil, err
	}
	return tasks, nil
}

// QueuedTasks returns up to q.Limit queued tasks of q.Types that are past
// their retry backoff and whose required labels the worker has, oldest
// first. A task qualifies when none of its required labels is missing from
// q.Labels, which the NOT EXISTS clause checks row by row.
func (s *SQLite) QueuedTasks(ctx context.Context, q QueuedQuery) ([]api.Task, error) {
	if len(q.Types) == 0 || q.Limit <= 0 {
		return nil, nil
	}
	args := []any{api.StateQueued}
	for _, t := range q.Types {
		args = append(args, t)
	}
	args = append(args, q.Now.UnixMilli())
	query := `SELECT ` + taskColumns + ` FROM tasks t WHERE t.state = ? AND t.type IN (` +
		placeholders(len(q.Types)) + `) AND t.not_before_ms <= ?
		AND NOT EXISTS (SELECT 1 FROM task_labels l WHERE l.task_id = t.id`
	if len(q.Labels) > 0 {
		pairs := make([]string, 0, len(q.Labels))
		for name, value := range q.Labels {
			pairs = append(pairs, `(l.name = ? AND l.value = ?)`)
			args = append(args, name, value)
		}
		query += ` AND NOT (` + strings.Join(pairs, " OR ") + `)`
	}
	query += `) ORDER BY t.seq LIMIT ?`
	args = append(args, q.Limit)
	return s.queryTasks(ctx, query, args...)
}

func (s *SQLite) queryTasks(ctx context.Context, query string, args ...any) ([]api.Task, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
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
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		var err error
		task, _, err = startAttemptTx(ctx, tx, taskID, workerID, now.UnixMilli())
		return err
	})
	if err != nil {
		return nil, err
	}
	return task, nil
}

// EndAttempt ends a running attempt as lost or timed out and queues the
// task again after end.Backoff, or ends the task when the attempt was its
// last counted one.
func (s *SQLite) EndAttempt(ctx context.Context, end AttemptEnd, now time.Time) (*api.Task, error) {
	if err := requireID("task id", end.TaskID); err != nil {
		return nil, fmt.Errorf("end attempt %d: %w", end.Attempt, err)
	}
	final := api.StateFailed
	reason := end.Reason
	switch end.State {
	case AttemptLost:
		reason = lostReason(reason)
	case AttemptTimedOut:
		final = api.StateTimedOut
	default:
		return nil, fmt.Errorf("end attempt %d of task %s: state %q is invalid; use %s or %s",
			end.Attempt, end.TaskID, end.State, AttemptLost, AttemptTimedOut)
	}
	var task *api.Task
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		current, err := getTask(ctx, tx, end.TaskID, false)
		if err != nil {
			return err
		}
		if current.State != api.StateRunning || current.Attempt != end.Attempt {
			return fmt.Errorf("end attempt %d of task %s: %w: task is %s at attempt %d",
				end.Attempt, end.TaskID, ErrConflict, current.State, current.Attempt)
		}
		ms := now.UnixMilli()
		failures := current.Attempt - current.Released
		if failures >= current.MaxAttempts {
			reason += fmt.Sprintf("; task %s after %d of %d attempts", final, failures, current.MaxAttempts)
			if err := endAttempt(ctx, tx, end.TaskID, end.Attempt, end.State, reason, false, ms); err != nil {
				return err
			}
			if err := setTaskState(ctx, tx, end.TaskID, final, ms); err != nil {
				return err
			}
		} else {
			if err := endAttempt(ctx, tx, end.TaskID, end.Attempt, end.State, reason, false, ms); err != nil {
				return err
			}
			if err := requeue(ctx, tx, end.TaskID, retryAt(now, end.Backoff, failures), false, ms); err != nil {
				return err
			}
		}
		task, err = getTask(ctx, tx, end.TaskID, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	return task, nil
}

// retryAt returns when a task whose attempts failed failures times may be
// handed out again, or 0 for at once.
func retryAt(now time.Time, backoff Backoff, failures int) int64 {
	if backoff == nil {
		return 0
	}
	delay := backoff(failures)
	if delay <= 0 {
		return 0
	}
	return now.Add(delay).UnixMilli()
}

// requeue queues a task again, not before notBeforeMS. A released attempt
// is counted in released, so that it does not use up max_attempts.
func requeue(ctx context.Context, tx *txn, taskID string, notBeforeMS int64, released bool, ms int64) error {
	releasedInc := 0
	if released {
		releasedInc = 1
	}
	_, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, worker_id = '', not_before_ms = ?,
		released = released + ?, updated_ms = ? WHERE id = ?`,
		api.StateQueued, notBeforeMS, releasedInc, ms, taskID)
	if err != nil {
		return fmt.Errorf("requeue task %s: %w", taskID, err)
	}
	return nil
}

func setTaskState(ctx context.Context, tx *txn, taskID, state string, ms int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, updated_ms = ? WHERE id = ?`,
		state, ms, taskID); err != nil {
		return fmt.Errorf("set task %s to %s: %w", taskID, state, err)
	}
	return nil
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

// endAttempt records how an attempt ended; byOutcome marks an end that its
// worker's outcome caused, which lets fence recognise that outcome when
// it arrives again.
func endAttempt(ctx context.Context, tx *txn, taskID string, attempt int, state, reason string,
	byOutcome bool, ms int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE attempts SET state = ?, reason = ?, ended_ms = ?, by_outcome = ?
		WHERE task_id = ? AND attempt = ?`, state, reason, ms, byOutcome, taskID, attempt)
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
	var checkpoint *CheckpointResult
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		current, err := getTask(ctx, tx, o.TaskID, false)
		if errors.Is(err, ErrNotFound) {
			result = OutcomeResult{Reason: fmt.Sprintf("unknown task %s", o.TaskID)}
			return nil
		}
		if err != nil {
			return err
		}
		// The carried checkpoint goes first, under its own rules, so that
		// the attempt's newest one is stored before the task moves on.
		if checkpoint, err = applyOutcomeCheckpoint(ctx, tx, current, o, now); err != nil {
			return err
		}
		reason, duplicate, err := fence(ctx, tx, current, o)
		if err != nil {
			return err
		}
		if reason != "" {
			result = OutcomeResult{Reason: reason, Duplicate: duplicate, Task: current}
			if !duplicate && o.Status == api.StateCancelled {
				if result.LostCancel, err = lostOn(ctx, tx, o.TaskID, o.Attempt, o.WorkerID); err != nil {
					return err
				}
			}
			return releaseLateHold(ctx, tx, current, o, now)
		}
		requeued, err := applyFencedOutcome(ctx, tx, current, o, now)
		if err != nil {
			return err
		}
		task, err := getTask(ctx, tx, o.TaskID, false)
		result = OutcomeResult{Applied: true, Requeued: requeued, Task: task,
			Late: current.State == api.StateQueued}
		return err
	})
	if err != nil {
		return OutcomeResult{}, err
	}
	result.Checkpoint = checkpoint
	return result, nil
}

// applyFencedOutcome applies an outcome that passed the fence and reports
// whether the task was queued again. A released attempt requeues the task
// at once without using up an attempt. A retryable failure requeues it
// after the backoff while attempts remain. Any other outcome, and a
// retryable failure of the last attempt, is the task's terminal outcome.
func applyFencedOutcome(ctx context.Context, tx *txn, task *api.Task, o Outcome, now time.Time) (bool, error) {
	ms := now.UnixMilli()
	failures := task.Attempt - task.Released
	switch {
	case o.Released:
		reason := "released by its draining worker"
		if o.Message != "" {
			reason += ": " + o.Message
		}
		if err := endAttempt(ctx, tx, o.TaskID, o.Attempt, AttemptReleased, reason, true, ms); err != nil {
			return false, err
		}
		return true, requeue(ctx, tx, o.TaskID, 0, true, ms)
	case o.Retryable && o.Status != api.StateSucceeded && failures < task.MaxAttempts:
		reason := "retryable failure: " + o.Message
		if err := endAttempt(ctx, tx, o.TaskID, o.Attempt, o.Status, reason, true, ms); err != nil {
			return false, err
		}
		return true, requeue(ctx, tx, o.TaskID, retryAt(now, o.RetryBackoff, failures), false, ms)
	}

	_, err := tx.ExecContext(ctx, `INSERT INTO outcomes (task_id, attempt, worker_id, status,
		exit_code, message, output, result, started_ms, finished_ms, received_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		o.TaskID, o.Attempt, o.WorkerID, o.Status, o.ExitCode, o.Message, o.Output,
		string(o.Result), toMillis(o.Started), toMillis(o.Finished), ms)
	if err != nil {
		return false, fmt.Errorf("insert outcome of task %s: %w", o.TaskID, err)
	}
	reason := ""
	if o.Retryable && o.Status != api.StateSucceeded {
		reason = fmt.Sprintf("retryable failure of the last attempt, %d of %d", failures, task.MaxAttempts)
	}
	if err := endAttempt(ctx, tx, o.TaskID, o.Attempt, o.Status, reason, true, ms); err != nil {
		return false, err
	}
	// The worker is set again for a late outcome of a lost attempt, whose
	// task waited in the queue without one.
	if _, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, worker_id = ?, updated_ms = ? WHERE id = ?`,
		o.Status, o.WorkerID, ms, o.TaskID); err != nil {
		return false, fmt.Errorf("set task %s to %s: %w", o.TaskID, o.Status, err)
	}
	return false, nil
}

// fence returns why an outcome may not change the task, or "" when the
// outcome is from the task's running attempt on the worker that runs it.
// duplicate is set when that worker's outcome already ended the attempt.
// The checks run in the transaction that applies the outcome, which holds
// the write lock from BEGIN, so no change lands between check and write.
func fence(ctx context.Context, tx *txn, task *api.Task, o Outcome) (reason string, duplicate bool, err error) {
	switch {
	case o.Attempt > task.Attempt:
		return fmt.Sprintf("unknown attempt %d, current attempt is %d", o.Attempt, task.Attempt), false, nil
	case o.Attempt == task.Attempt && task.State == api.StateRunning && task.WorkerID != o.WorkerID:
		return fmt.Sprintf("attempt %d runs on worker %s, not %s", o.Attempt, task.WorkerID, o.WorkerID),
			false, nil
	case o.Attempt == task.Attempt && task.State == api.StateRunning:
		return "", false, nil
	case o.Attempt == task.Attempt && task.State == api.StateQueued && endsTask(o) &&
		o.Status != api.StateCancelled:
		// A cancelled attempt is excluded: a worker that comes back after
		// reassign_after gets a cancel for each lost attempt it still runs,
		// and the outcome of that cancel must not end the queued task.
		// The coordinator ended the attempt as lost, and no newer attempt
		// has started, so the worker's late result is still the newest.
		lost, err := lostOn(ctx, tx, task.ID, o.Attempt, o.WorkerID)
		if err != nil {
			return "", false, err
		}
		if lost {
			return "", false, nil
		}
	}

	// The attempt ended: by this outcome, sent again after a replay, or by
	// the coordinator, which superseded it.
	duplicate, err = endedByOutcome(ctx, tx, task.ID, o)
	if err != nil {
		return "", false, err
	}
	switch {
	case duplicate:
		return fmt.Sprintf("duplicate: outcome of attempt %d already applied", o.Attempt), true, nil
	case o.Attempt < task.Attempt:
		return fmt.Sprintf("stale attempt %d, current attempt is %d", o.Attempt, task.Attempt), false, nil
	case task.State == api.StateQueued:
		return fmt.Sprintf("attempt %d already ended, and the task is queued for its next attempt", o.Attempt),
			false, nil
	}
	return fmt.Sprintf("task is %s", task.State), false, nil
}

// endsTask reports whether o would be the task's terminal outcome: neither
// a release nor a retryable failure, which would only queue the task again.
func endsTask(o Outcome) bool {
	return !o.Released && (!o.Retryable || o.Status == api.StateSucceeded)
}

// attemptRow is the part of an attempt's row that the fence reads.
type attemptRow struct {
	state     string
	workerID  string
	byOutcome bool
}

// readAttempt returns the row of one attempt, or nil when there is none.
func readAttempt(ctx context.Context, tx queryer, taskID string, attempt int) (*attemptRow, error) {
	var row attemptRow
	err := tx.QueryRowContext(ctx, `SELECT state, worker_id, by_outcome FROM attempts
		WHERE task_id = ? AND attempt = ?`, taskID, attempt).Scan(&row.state, &row.workerID, &row.byOutcome)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read attempt %d of task %s: %w", attempt, taskID, err)
	}
	return &row, nil
}

// lostOn reports whether the coordinator ended the task's attempt as lost
// while workerID ran it.
func lostOn(ctx context.Context, tx queryer, taskID string, attempt int, workerID string) (bool, error) {
	row, err := readAttempt(ctx, tx, taskID, attempt)
	if err != nil || row == nil {
		return false, err
	}
	return row.state == AttemptLost && row.workerID == workerID, nil
}

// endedByOutcome reports whether o's worker ended o's attempt with an
// outcome before. Attempts ended before the by_outcome column existed are
// recognised through the task's terminal outcome.
func endedByOutcome(ctx context.Context, tx queryer, taskID string, o Outcome) (bool, error) {
	row, err := readAttempt(ctx, tx, taskID, o.Attempt)
	switch {
	case err != nil || row == nil:
		return false, err
	case row.byOutcome:
		return row.workerID == o.WorkerID, nil
	}
	existing, err := getOutcome(ctx, tx, taskID)
	if err != nil {
		return false, err
	}
	return existing != nil && existing.Attempt == o.Attempt && existing.WorkerID == o.WorkerID, nil
}

// AppliedOutcomes implements Store.
func (s *SQLite) AppliedOutcomes(ctx context.Context, workerID string, refs []AttemptRef) ([]AttemptRef, error) {
	var applied []AttemptRef
	for _, ref := range refs {
		ended, err := endedByOutcome(ctx, s.reader, ref.TaskID,
			Outcome{TaskID: ref.TaskID, Attempt: ref.Attempt, WorkerID: workerID})
		if err != nil {
			return nil, err
		}
		if ended {
			applied = append(applied, ref)
		}
	}
	return applied, nil
}

// whereQueuedAfterLoss matches the task with the given id, state and
// attempt when that attempt ended as lost on the given worker. Its
// arguments are the task id, the queued state, the attempt, AttemptLost and
// the worker id.
const whereQueuedAfterLoss = ` WHERE id = ? AND state = ? AND attempt = ? AND EXISTS (SELECT 1 FROM attempts a
	WHERE a.task_id = tasks.id AND a.attempt = tasks.attempt AND a.state = ? AND a.worker_id = ?)`

// HoldForLateOutcomes keeps each task of refs out of the scheduler until
// until, when the task is queued and its current attempt is the ref's,
// ended as lost on workerID. Such a worker reported the attempt's outcome
// as held in its state sync, and that outcome, once it arrives, ends the
// task without another run. The hold only raises not_before_ms, so the
// task is scheduled as usual when the outcome does not come.
func (s *SQLite) HoldForLateOutcomes(ctx context.Context, workerID string, refs []AttemptRef,
	until time.Time) (int, error) {
	if len(refs) == 0 {
		return 0, nil
	}
	var heldTasks int64
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		heldTasks = 0
		for _, ref := range refs {
			res, err := tx.ExecContext(ctx, `UPDATE tasks SET not_before_ms = MAX(not_before_ms, ?)`+
				whereQueuedAfterLoss, until.UnixMilli(), ref.TaskID, api.StateQueued, ref.Attempt, AttemptLost, workerID)
			if err != nil {
				return fmt.Errorf("hold task %s for the late outcome of attempt %d: %w", ref.TaskID, ref.Attempt, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("hold task %s for the late outcome of attempt %d: %w", ref.TaskID, ref.Attempt, err)
			}
			heldTasks += n
		}
		return nil
	})
	return int(heldTasks), err
}

// releaseLateHold ends the hold of HoldForLateOutcomes when the outcome it
// waited for arrived and was not applied, such as the cancelled outcome of
// a lost attempt that the worker still ran, so the task runs again at once.
func releaseLateHold(ctx context.Context, tx *txn, task *api.Task, o Outcome, now time.Time) error {
	if task.State != api.StateQueued || o.Attempt != task.Attempt {
		return nil
	}
	_, err := tx.ExecContext(ctx, `UPDATE tasks SET not_before_ms = MIN(not_before_ms, ?)`+whereQueuedAfterLoss,
		now.UnixMilli(), o.TaskID, api.StateQueued, o.Attempt, AttemptLost, o.WorkerID)
	if err != nil {
		return fmt.Errorf("release the hold of task %s: %w", o.TaskID, err)
	}
	return nil
}

// CancelTask cancels a queued or running task; a running attempt ends as
// cancelled at once and its later outcome is rejected by the fence.
func (s *SQLite) CancelTask(ctx context.Context, id, reason string, now time.Time) (*api.Task, error) {
	if err := requireID("task id", id); err != nil {
		return nil, fmt.Errorf("cancel task: %w", err)
	}
	var before *api.Task
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		var err error
		if before, err = getTask(ctx, tx, id, false); err != nil {
			return err
		}
		if api.Terminal(before.State) {
			return &terminalError{id: id, state: before.State}
		}
		ms := now.UnixMilli()
		if before.State == api.StateRunning {
			if err := endAttempt(ctx, tx, id, before.Attempt, api.StateCancelled, reason, false, ms); err != nil {
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
	query := `SELECT a.task_id, a.attempt, a.worker_id, a.started_ms, t.timeout_ms FROM attempts a
		JOIN tasks t ON t.id = a.task_id AND t.attempt = a.attempt
		WHERE t.state = ? AND a.state = ?`
	args := []any{api.StateRunning, AttemptRunning}
	if workerID != "" {
		query += ` AND a.worker_id = ?`
		args = append(args, workerID)
	}
	rows, err := s.reader.QueryContext(ctx, query+` ORDER BY t.seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("list running attempts: %w", err)
	}
	defer rows.Close()
	var running []RunningAttempt
	for rows.Next() {
		var r RunningAttempt
		var started int64
		if err := rows.Scan(&r.TaskID, &r.Attempt, &r.WorkerID, &started, &r.TimeoutMS); err != nil {
			return nil, fmt.Errorf("list running attempts: %w", err)
		}
		r.Started = fromMillis(started)
		running = append(running, r)
	}
	return running, rows.Err()
}
