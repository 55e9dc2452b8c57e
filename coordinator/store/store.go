// Package store keeps the coordinator's durable state: tasks, their attempts
// and outcomes, and the workers it has seen. The coordinator commits every
// state change here before it acknowledges it to a worker or an API client,
// so a restart loses nothing.
//
// Store is the interface the coordinator uses; SQLite implements it for a
// single coordinator, and a PostgreSQL implementation can fill the same
// interface for replicas sharing one database.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

// Attempt states beyond the task states. An attempt that ends with an
// outcome takes the outcome's status as its state.
const (
	// AttemptRunning is an attempt handed to a worker and not ended yet.
	AttemptRunning = "running"
	// AttemptLost is an attempt whose worker did not come back within the
	// grace period or no longer had the attempt when it synced.
	AttemptLost = "lost"
	// AttemptReleased is an attempt that a draining worker gave back
	// unfinished. It does not count against the task's max_attempts.
	AttemptReleased = "released"
	// AttemptTimedOut is an attempt that ran past its task's timeout plus
	// the coordinator's grace, which the coordinator ended itself.
	AttemptTimedOut = "timed_out"
)

// Errors that callers test with errors.Is.
var (
	// ErrNotFound is returned for a task ID the store does not have.
	ErrNotFound = errors.New("task not found")
	// ErrWorkerNotFound is returned when no recorded worker has the ID.
	ErrWorkerNotFound = errors.New("worker not found")
	// ErrTerminal is returned when cancelling a task that already ended.
	ErrTerminal = errors.New("task already ended")
	// ErrConflict is returned when a task is not in the state or attempt
	// that a change expects, for example when two schedulers race.
	ErrConflict = errors.New("task state changed")
)

// NewTask is a task to create. The store sets its state to queued and its
// attempt to 0.
type NewTask struct {
	ID          string
	Batch       string
	Name        string
	Type        string
	Payload     json.RawMessage
	TimeoutMS   int64
	MaxAttempts int
	// Labels are the worker labels the task requires, name to value.
	Labels map[string]string
}

// TaskFilter selects tasks in ListTasks; empty fields match all tasks.
type TaskFilter struct {
	Batch string
	State string
}

// RunningAttempt is the current attempt of a running task.
type RunningAttempt struct {
	TaskID   string
	Attempt  int
	WorkerID string
	Started  time.Time
	// TimeoutMS is the task's timeout in milliseconds; 0 means none.
	TimeoutMS int64
}

// AttemptRef names one attempt of one task.
type AttemptRef struct {
	TaskID  string
	Attempt int
}

// QueuedQuery selects the queued tasks that one worker may run.
type QueuedQuery struct {
	// Types are the task types the worker serves; none selects no task.
	Types []string
	// Labels are the worker's labels. A task matches when every label it
	// requires is among them with the same value.
	Labels map[string]string
	// Now excludes the tasks whose retry backoff lasts past it.
	Now   time.Time
	Limit int
}

// AttemptStart names a queued task to start on a worker, for StartAttempts.
type AttemptStart struct {
	TaskID   string
	WorkerID string
}

// StartedAttempt is the result of one AttemptStart.
type StartedAttempt struct {
	// Task is the task after the start; nil when Err is set.
	Task *api.Task
	// Checkpoint is the stored checkpoint the attempt resumes from; nil for
	// a fresh start.
	Checkpoint *Checkpoint
	// Err is ErrConflict, wrapped, when the task was no longer queued.
	Err error
}

// Backoff returns the delay before the next attempt of a task whose
// attempts failed failures times, counting only attempts that count
// against max_attempts.
type Backoff func(failures int) time.Duration

// AttemptEnd ends a running attempt that has no outcome of its own.
type AttemptEnd struct {
	TaskID  string
	Attempt int
	// State is AttemptLost or AttemptTimedOut.
	State  string
	Reason string
	// Backoff sets the delay before the requeued task is handed out again;
	// nil requeues it for at once.
	Backoff Backoff
}

// Outcome is the final report of one attempt, as received from a worker.
type Outcome struct {
	TaskID   string
	Attempt  int
	WorkerID string
	// Status is a terminal task state: succeeded, failed, cancelled or
	// timed_out.
	Status   string
	ExitCode int
	Message  string
	Output   string
	Result   json.RawMessage
	Started  time.Time
	Finished time.Time
	// Retryable marks a failure the task did not cause, such as a crashed
	// executor: the task is queued again while attempts remain.
	Retryable bool
	// Released marks an attempt a draining worker gave back unfinished:
	// the task is queued again and the attempt does not count against
	// max_attempts.
	Released bool
	// RetryBackoff sets the delay before a retryable failure's next
	// attempt; nil means at once.
	RetryBackoff Backoff
	// Checkpoint is the attempt's newest checkpoint that the worker had no
	// acknowledgement for; ApplyOutcome stores it first, under the rules
	// of CheckpointStore. Nil when the outcome carries none.
	Checkpoint *Checkpoint
}

// OutcomeResult is the store's decision on an outcome. Reason explains
// a rejection, such as a stale attempt or a duplicate.
type OutcomeResult struct {
	Applied bool
	Reason  string
	// Duplicate is set when the same attempt's outcome was applied before,
	// as after a replay; the rejection is then harmless.
	Duplicate bool
	// LostCancel is set when the rejected outcome reports the cancel that
	// the coordinator sent for an attempt it had ended as lost, from the
	// worker that ran it. The coordinator asked for that cancel, so the
	// rejection is expected.
	LostCancel bool
	// Requeued is set when the applied outcome queued the task again: a
	// released attempt, or a retryable failure with attempts left.
	Requeued bool
	// Late is set when the applied outcome is from an attempt that the
	// coordinator had ended as lost, while the task waited for its next
	// attempt.
	Late bool
	// Task is the task after the decision; nil when the task is unknown.
	Task *api.Task
	// Checkpoint is the decision on the outcome's checkpoint; nil when the
	// outcome carried none.
	Checkpoint *CheckpointResult
}

// WorkerRecord is the stored declaration of a worker, kept between sessions.
type WorkerRecord struct {
	ID            string
	TaskTypes     []string
	Slots         int
	Labels        map[string]string
	HostVersion   string
	PluginVersion string
	LastSeen      time.Time
}

// SavedSession is a worker session kept by a coordinator that shut down,
// so that its worker can resume it after the restart. State is the
// coordinator's encoding of the session; the store does not read it.
type SavedSession struct {
	ID       string
	WorkerID string
	State    []byte
	Saved    time.Time
}

// Store is the coordinator's durable state. Every method that changes state
// commits before it returns. Implementations are safe for concurrent use.
type Store interface {
	CheckpointStore
	CredentialStore
	TokenStore

	// CreateTasks inserts queued tasks in one transaction, in order.
	CreateTasks(ctx context.Context, tasks []NewTask, now time.Time) error
	// GetTask returns a task with its attempts and outcome, or ErrNotFound.
	GetTask(ctx context.Context, id string) (*api.Task, error)
	// GetTasks returns the tasks with the given IDs in that order, without
	// attempts and outcomes, or ErrNotFound when one does not exist.
	GetTasks(ctx context.Context, ids []string) ([]api.Task, error)
	// ListTasks returns the tasks that match filter in creation order,
	// without attempts and outcomes.
	ListTasks(ctx context.Context, filter TaskFilter) ([]api.Task, error)
	// QueuedTasks returns up to query.Limit queued tasks that a worker with
	// query's types and labels may run and whose retry backoff has passed,
	// oldest first.
	QueuedTasks(ctx context.Context, query QueuedQuery) ([]api.Task, error)
	// StartAttempt moves a queued task to running on workerID with the next
	// attempt number and records the attempt. It returns ErrConflict when
	// the task is no longer queued.
	StartAttempt(ctx context.Context, taskID, workerID string, now time.Time) (*api.Task, error)
	// StartAttempts starts several attempts in one transaction, each as
	// StartAttempt does, and returns one result for each in order. A start
	// that conflicts gets ErrConflict in its result, while any other
	// failure fails the call and starts nothing.
	StartAttempts(ctx context.Context, starts []AttemptStart, now time.Time) ([]StartedAttempt, error)
	// EndAttempt ends a running attempt as lost or timed out and queues the
	// task again after the backoff. When the attempt was the task's last,
	// the task ends instead: failed after a lost attempt, timed_out after a
	// timed out one. It returns ErrConflict when the attempt is not the
	// task's running attempt.
	EndAttempt(ctx context.Context, end AttemptEnd, now time.Time) (*api.Task, error)
	// ApplyOutcome records an outcome and the task's terminal state in one
	// transaction when (task, attempt, worker) is the task's running
	// attempt; otherwise it changes nothing and returns the reason. A
	// released outcome, or a retryable one with attempts left, ends the
	// attempt and queues the task again instead.
	ApplyOutcome(ctx context.Context, outcome Outcome, now time.Time) (OutcomeResult, error)
	// CancelTask cancels a queued or running task and returns it as it was
	// before, so the caller can tell the worker of a running attempt. It
	// returns ErrTerminal for a task that already ended.
	CancelTask(ctx context.Context, id, reason string, now time.Time) (before *api.Task, err error)
	// RunningAttempts returns the running attempts of workerID, or of all
	// workers when workerID is empty.
	RunningAttempts(ctx context.Context, workerID string) ([]RunningAttempt, error)
	// AppliedOutcomes returns, in the order of refs, the attempts whose
	// outcome from workerID already ended them. A worker that reports such
	// an outcome as held after a reconnect can delete it without sending
	// it again.
	AppliedOutcomes(ctx context.Context, workerID string, refs []AttemptRef) ([]AttemptRef, error)
	// HoldForLateOutcomes keeps each task of refs out of the scheduler
	// until until, when the task is queued and its current attempt is the
	// ref's, ended as lost on workerID. It returns the number of tasks held.
	HoldForLateOutcomes(ctx context.Context, workerID string, refs []AttemptRef, until time.Time) (int, error)
	// RunningCounts returns the number of running attempts of each worker
	// that has any.
	RunningCounts(ctx context.Context) (map[string]int, error)
	// UpsertWorker records a worker's declaration from its latest Hello.
	UpsertWorker(ctx context.Context, worker WorkerRecord) error
	// TouchWorker moves the worker's last-seen time forward to lastSeen,
	// when the worker is recorded and lastSeen is later.
	TouchWorker(ctx context.Context, id string, lastSeen time.Time) error
	// ListWorkers returns every recorded worker ordered by ID.
	ListWorkers(ctx context.Context) ([]WorkerRecord, error)
	// DeleteWorker removes the worker's record, or returns
	// ErrWorkerNotFound. Its tasks and attempts stay.
	DeleteWorker(ctx context.Context, id string) error
	// SaveSessions replaces every saved session with sessions in one
	// transaction.
	SaveSessions(ctx context.Context, sessions []SavedSession) error
	// TakeSessions returns the saved sessions and deletes them in the same
	// transaction, so that each is restored at most once.
	TakeSessions(ctx context.Context) ([]SavedSession, error)
	// Close releases the store.
	Close() error
}
