package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol"
)

var _ CheckpointStore = (*SQLite)(nil)

// SaveCheckpoint stores a checkpoint when the rules of CheckpointStore
// allow it, in one transaction with its history entry.
func (s *SQLite) SaveCheckpoint(ctx context.Context, cp Checkpoint, now time.Time) (CheckpointResult, error) {
	if err := errors.Join(requireID("task id", cp.TaskID), requireID("worker id", cp.WorkerID)); err != nil {
		return CheckpointResult{}, fmt.Errorf("save checkpoint of task %q: %w", cp.TaskID, err)
	}
	var result CheckpointResult
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		task, err := getTask(ctx, tx, cp.TaskID, false)
		if errors.Is(err, ErrNotFound) {
			result = CheckpointResult{Reason: fmt.Sprintf("unknown task %s", cp.TaskID)}
			return nil
		}
		if err != nil {
			return err
		}
		result, err = saveCheckpointTx(ctx, tx, task, cp, now)
		return err
	})
	if err != nil {
		return CheckpointResult{}, err
	}
	return result, nil
}

// saveCheckpointTx applies the rules of CheckpointStore against task as
// read in tx, and stores cp when they allow it. ApplyOutcome calls it for
// the checkpoint that an outcome carries, before it applies the outcome.
func saveCheckpointTx(ctx context.Context, tx *txn, task *api.Task, cp Checkpoint,
	now time.Time) (CheckpointResult, error) {
	var stored struct {
		attempt  int
		sequence uint64
	}
	judged, err := asRunningIfLost(ctx, tx, task, cp)
	if err != nil {
		return CheckpointResult{}, err
	}
	err = tx.QueryRowContext(ctx, `SELECT attempt, sequence FROM checkpoints WHERE task_id = ?`,
		cp.TaskID).Scan(&stored.attempt, &stored.sequence)
	if result, ok := admitCheckpoint(judged, cp); !ok {
		// An outcome can overtake the checkpoints sent just before it and
		// carries the newest of them, so a later one of the same attempt
		// that is not newer than the stored one is only a late copy.
		late := result.Stale && cp.Attempt == task.Attempt && err == nil &&
			stored.attempt == cp.Attempt && stored.sequence >= cp.Sequence
		if late {
			return CheckpointResult{Duplicate: true, Reason: fmt.Sprintf(
				"late: attempt %d ended, and its stored checkpoint %d is as new", cp.Attempt, stored.sequence)}, nil
		}
		return result, nil
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return CheckpointResult{}, fmt.Errorf("read checkpoint of task %s: %w", cp.TaskID, err)
	case cp.Attempt == stored.attempt && cp.Sequence == stored.sequence:
		return CheckpointResult{Duplicate: true, Reason: fmt.Sprintf(
			"duplicate: checkpoint %d of attempt %d is already stored", cp.Sequence, cp.Attempt)}, nil
	case !checkpointNewer(cp.Attempt, cp.Sequence, stored.attempt, stored.sequence):
		return CheckpointResult{Stale: true, Reason: fmt.Sprintf(
			"stale checkpoint %d of attempt %d, stored is checkpoint %d of attempt %d",
			cp.Sequence, cp.Attempt, stored.sequence, stored.attempt)}, nil
	}

	ms := now.UnixMilli()
	saved := toMillis(cp.Saved)
	if saved == 0 {
		saved = ms
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO checkpoints (task_id, attempt, sequence, data, fraction,
		message, size, saved_ms, stored_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (task_id) DO UPDATE SET attempt = excluded.attempt, sequence = excluded.sequence,
		data = excluded.data, fraction = excluded.fraction, message = excluded.message,
		size = excluded.size, saved_ms = excluded.saved_ms, stored_ms = excluded.stored_ms`,
		cp.TaskID, cp.Attempt, cp.Sequence, nonNil(cp.Data), cp.Fraction, cp.Message, len(cp.Data), saved, ms)
	if err != nil {
		return CheckpointResult{}, fmt.Errorf("store checkpoint %d of task %s: %w", cp.Sequence, cp.TaskID, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO checkpoint_history (task_id, position, attempt, sequence,
		size, saved_ms, stored_ms) SELECT ?, COALESCE(MAX(position), 0) + 1, ?, ?, ?, ?, ?
		FROM checkpoint_history WHERE task_id = ?`,
		cp.TaskID, cp.Attempt, cp.Sequence, len(cp.Data), saved, ms, cp.TaskID)
	if err != nil {
		return CheckpointResult{}, fmt.Errorf("record checkpoint %d of task %s in history: %w",
			cp.Sequence, cp.TaskID, err)
	}
	return CheckpointResult{Applied: true}, nil
}

// admitCheckpoint checks everything about cp that does not need the stored
// checkpoint: its size and numbers, and that its attempt is the task's
// running attempt on the worker that sent it.
func admitCheckpoint(task *api.Task, cp Checkpoint) (CheckpointResult, bool) {
	switch {
	case len(cp.Data) > protocol.MaxCheckpointBytes:
		return CheckpointResult{Reason: fmt.Sprintf("checkpoint data of %d bytes exceeds the limit of %d bytes",
			len(cp.Data), protocol.MaxCheckpointBytes)}, false
	case cp.Attempt < 1 || cp.Sequence < 1:
		return CheckpointResult{Reason: fmt.Sprintf(
			"invalid checkpoint %d of attempt %d: attempts and sequences start at 1", cp.Sequence, cp.Attempt)}, false
	case cp.Attempt < task.Attempt:
		return CheckpointResult{Stale: true, Reason: fmt.Sprintf("stale attempt %d, current attempt is %d",
			cp.Attempt, task.Attempt)}, false
	case cp.Attempt > task.Attempt:
		return CheckpointResult{Reason: fmt.Sprintf("unknown attempt %d, current attempt is %d",
			cp.Attempt, task.Attempt)}, false
	case task.State != api.StateRunning:
		return CheckpointResult{Stale: true, Reason: fmt.Sprintf("attempt %d no longer runs: task is %s",
			cp.Attempt, task.State)}, false
	case task.WorkerID != cp.WorkerID:
		return CheckpointResult{Stale: true, Reason: fmt.Sprintf("attempt %d runs on worker %s, not %s",
			cp.Attempt, task.WorkerID, cp.WorkerID)}, false
	}
	return CheckpointResult{}, true
}

// checkpointNewer reports whether checkpoint (attempt, sequence) is newer
// than (storedAttempt, storedSequence): a higher attempt, or the same
// attempt and a higher sequence.
func checkpointNewer(attempt int, sequence uint64, storedAttempt int, storedSequence uint64) bool {
	if attempt != storedAttempt {
		return attempt > storedAttempt
	}
	return sequence > storedSequence
}

// nonNil keeps empty checkpoint data from being stored as NULL.
func nonNil(data []byte) []byte {
	if data == nil {
		return []byte{}
	}
	return data
}

// GetCheckpoint returns the task's newest stored checkpoint with its data.
func (s *SQLite) GetCheckpoint(ctx context.Context, taskID string) (*Checkpoint, error) {
	if err := requireID("task id", taskID); err != nil {
		return nil, fmt.Errorf("get checkpoint: %w", err)
	}
	return getCheckpoint(ctx, s.reader, taskID)
}

func getCheckpoint(ctx context.Context, q queryer, taskID string) (*Checkpoint, error) {
	cp := Checkpoint{TaskID: taskID}
	var saved int64
	err := q.QueryRowContext(ctx, `SELECT attempt, sequence, data, fraction, message, saved_ms
		FROM checkpoints WHERE task_id = ?`, taskID).Scan(
		&cp.Attempt, &cp.Sequence, &cp.Data, &cp.Fraction, &cp.Message, &saved)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint of task %s: %w", taskID, err)
	}
	cp.Saved = fromMillis(saved)
	return &cp, nil
}

// CheckpointHistory returns the task's stored checkpoints in the order the
// store accepted them.
func (s *SQLite) CheckpointHistory(ctx context.Context, taskID string) ([]CheckpointRecord, error) {
	if err := requireID("task id", taskID); err != nil {
		return nil, fmt.Errorf("read checkpoint history: %w", err)
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT position, attempt, sequence, size, saved_ms, stored_ms
		FROM checkpoint_history WHERE task_id = ? ORDER BY position`, taskID)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint history of task %s: %w", taskID, err)
	}
	defer rows.Close()
	var history []CheckpointRecord
	for rows.Next() {
		var r CheckpointRecord
		var saved, stored int64
		if err := rows.Scan(&r.Position, &r.Attempt, &r.Sequence, &r.SizeBytes, &saved, &stored); err != nil {
			return nil, fmt.Errorf("read checkpoint history of task %s: %w", taskID, err)
		}
		r.Saved, r.Stored = fromMillis(saved), fromMillis(stored)
		history = append(history, r)
	}
	return history, rows.Err()
}

// addCheckpointDetails sets the task's checkpoint summary and the resume
// point of each of its attempts.
func addCheckpointDetails(ctx context.Context, q queryer, task *api.Task) error {
	infos, err := checkpointInfos(ctx, q, []string{task.ID})
	if err != nil {
		return err
	}
	task.Checkpoint = infos[task.ID]

	rows, err := q.QueryContext(ctx, `SELECT attempt, resumed_attempt, resumed_sequence FROM attempts
		WHERE task_id = ? AND resumed_attempt > 0`, task.ID)
	if err != nil {
		return fmt.Errorf("read resume points of task %s: %w", task.ID, err)
	}
	defer rows.Close()
	resumed := map[int]*api.CheckpointRef{}
	for rows.Next() {
		var attempt int
		var ref api.CheckpointRef
		if err := rows.Scan(&attempt, &ref.Attempt, &ref.Sequence); err != nil {
			return fmt.Errorf("read resume points of task %s: %w", task.ID, err)
		}
		resumed[attempt] = &ref
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read resume points of task %s: %w", task.ID, err)
	}
	for i := range task.Attempts {
		task.Attempts[i].ResumedFrom = resumed[task.Attempts[i].Attempt]
	}
	return nil
}

// addCheckpointInfos sets the checkpoint summary of each listed task.
func addCheckpointInfos(ctx context.Context, q queryer, tasks []api.Task) error {
	ids := make([]string, len(tasks))
	for i, t := range tasks {
		ids[i] = t.ID
	}
	infos, err := checkpointInfos(ctx, q, ids)
	if err != nil {
		return err
	}
	for i := range tasks {
		tasks[i].Checkpoint = infos[tasks[i].ID]
	}
	return nil
}

// checkpointQueryBatch bounds the task IDs of one query, below SQLite's
// default limit of 32766 bound parameters.
const checkpointQueryBatch = 500

// checkpointInfos returns the checkpoint summaries of the tasks that have
// one, by task ID.
func checkpointInfos(ctx context.Context, q queryer, ids []string) (map[string]*api.Checkpoint, error) {
	infos := map[string]*api.Checkpoint{}
	for start := 0; start < len(ids); start += checkpointQueryBatch {
		batch := ids[start:min(start+checkpointQueryBatch, len(ids))]
		args := make([]any, len(batch))
		for i, id := range batch {
			args[i] = id
		}
		if err := readCheckpointInfos(ctx, q, args, infos); err != nil {
			return nil, err
		}
	}
	return infos, nil
}

func readCheckpointInfos(ctx context.Context, q queryer, ids []any, into map[string]*api.Checkpoint) error {
	rows, err := q.QueryContext(ctx, `SELECT task_id, attempt, sequence, fraction, message, size,
		saved_ms, stored_ms FROM checkpoints WHERE task_id IN (`+placeholders(len(ids))+`)`, ids...)
	if err != nil {
		return fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var info api.Checkpoint
		var saved, stored int64
		if err := rows.Scan(&id, &info.Attempt, &info.Sequence, &info.Fraction, &info.Message,
			&info.SizeBytes, &saved, &stored); err != nil {
			return fmt.Errorf("read checkpoints: %w", err)
		}
		info.Saved, info.Stored = fromMillis(saved), fromMillis(stored)
		into[id] = &info
	}
	return rows.Err()
}

// applyOutcomeCheckpoint stores the checkpoint that outcome o carries, as
// of the task before the outcome. It returns nil when o carries none.
func applyOutcomeCheckpoint(ctx context.Context, tx *txn, task *api.Task, o Outcome,
	now time.Time) (*CheckpointResult, error) {
	if o.Checkpoint == nil {
		return nil, nil
	}
	cp := *o.Checkpoint
	cp.TaskID, cp.Attempt, cp.WorkerID = o.TaskID, o.Attempt, o.WorkerID
	result, err := saveCheckpointTx(ctx, tx, task, cp, now)
	if err != nil {
		return nil, err
	}
	return &result, nil
}

// asRunningIfLost returns the task as the checkpoint rules see it for cp.
// While the task waits in the queue and no newer attempt has started, a
// checkpoint of its lost attempt from the worker that ran it counts as if
// that attempt still ran there, because it records the task's newest work.
// This covers checkpoint frames of a worker back after reassign_after,
// and the checkpoint that a late outcome of that attempt carries.
func asRunningIfLost(ctx context.Context, tx *txn, task *api.Task, cp Checkpoint) (*api.Task, error) {
	if task.State != api.StateQueued || cp.Attempt != task.Attempt {
		return task, nil
	}
	lost, err := lostOn(ctx, tx, task.ID, cp.Attempt, cp.WorkerID)
	if err != nil || !lost {
		return task, err
	}
	running := *task
	running.State, running.WorkerID = api.StateRunning, cp.WorkerID
	return &running, nil
}
