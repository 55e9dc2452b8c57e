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
)

// Errors that callers test with errors.Is.
var (
	// ErrNotFound is returned for a task ID the store does not have.
	ErrNotFound = errors.New("task not found")
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
}

// OutcomeResult is the store's decision on an outcome. Reason explains
// a rejection, such as a stale attempt or a duplicate.
type OutcomeResult struct {
	Applied bool
	Reason  string
	// Task is the task after the decision; nil when the task is unknown.
	Task *api.Task
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
	// CreateTasks inserts queued tasks in one transaction, in order.
	CreateTasks(ctx context.Context, tasks []NewTask, now time.Time) error
	// GetTask returns a task with its attempts and outcome, or ErrNotFound.
	GetTask(ctx context.Context, id string) (*api.Task, error)
	// ListTasks returns the tasks that match filter in creation order,
	// without attempts and outcomes.
	ListTasks(ctx context.Context, filter TaskFilter) ([]api.Task, error)
	// QueuedTasks returns up to limit queued tasks whose type is one of
	// types, oldest first.
	QueuedTasks(ctx context.Context, types []string, limit int) ([]api.Task, error)
	// StartAttempt moves a queued task to running on workerID with the next
	// attempt number and records the attempt. It returns ErrConflict when
	// the task is no longer queued.
	StartAttempt(ctx context.Context, taskID, workerID string, now time.Time) (*api.Task, error)
	// LoseAttempt ends a running attempt as lost with reason and queues the
	// task again, or fails it when it used all its attempts. It returns
	// ErrConflict when attempt is not the task's running attempt.
	LoseAttempt(ctx context.Context, taskID string, attempt int, reason string, now time.Time) (*api.Task, error)
	// ApplyOutcome records an outcome and the task's terminal state in one
	// transaction when (task, attempt, worker) is the task's running
	// attempt; otherwise it changes nothing and returns the reason.
	ApplyOutcome(ctx context.Context, outcome Outcome, now time.Time) (OutcomeResult, error)
	// CancelTask cancels a queued or running task and returns it as it was
	// before, so the caller can tell the worker of a running attempt. It
	// returns ErrTerminal for a task that already ended.
	CancelTask(ctx context.Context, id, reason string, now time.Time) (before *api.Task, err error)
	// RunningAttempts returns the running attempts of workerID, or of all
	// workers when workerID is empty.
	RunningAttempts(ctx context.Context, workerID string) ([]RunningAttempt, error)
	// UpsertWorker records a worker's declaration from its latest Hello.
	UpsertWorker(ctx context.Context, worker WorkerRecord) error
	// ListWorkers returns every recorded worker ordered by ID.
	ListWorkers(ctx context.Context) ([]WorkerRecord, error)
	// SaveSessions replaces every saved session with sessions in one
	// transaction.
	SaveSessions(ctx context.Context, sessions []SavedSession) error
	// TakeSessions returns the saved sessions and deletes them in the same
	// transaction, so that each is restored at most once.
	TakeSessions(ctx context.Context) ([]SavedSession, error)
	// Close releases the store.
	Close() error
}
