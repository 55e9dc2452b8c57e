package store

import (
	"context"
	"time"
)

// Checkpoint is one checkpoint of a task attempt, as received from a
// worker in a checkpoint frame or carried by a task outcome.
type Checkpoint struct {
	TaskID   string
	Attempt  int
	WorkerID string
	// Sequence numbers the checkpoint among its attempt's checkpoints, from 1.
	Sequence uint64
	Data     []byte
	Fraction float64
	Message  string
	// Saved is when the worker received the checkpoint from its executor.
	Saved time.Time
}

// CheckpointResult is the store's decision on a checkpoint. Reason
// explains a rejection.
type CheckpointResult struct {
	Applied bool
	Reason  string
	// Stale marks a rejection because the checkpoint is from an attempt
	// that no longer runs, or older than the stored one.
	Stale bool
	// Duplicate marks a checkpoint equal in attempt and sequence to the
	// stored one, as after a replay; the rejection is then harmless.
	Duplicate bool
}

// CheckpointRecord is one entry of a task's checkpoint history: a
// checkpoint the store accepted, without its data.
type CheckpointRecord struct {
	// Position counts the task's stored checkpoints from 1 in the order
	// the store accepted them.
	Position  int
	Attempt   int
	Sequence  uint64
	SizeBytes int
	Saved     time.Time
	Stored    time.Time
}

// CheckpointStore keeps the newest checkpoint of each task. A checkpoint is
// stored only while its attempt is the task's running attempt on the
// worker that sent it, or that attempt was lost on that worker and the
// task waits in the queue for its next attempt, only when its data is within
// protocol.MaxCheckpointBytes, and only when it is newer than the stored
// one: a higher attempt, or the same attempt and a higher sequence. So
// the stored checkpoint of a task never moves backwards.
type CheckpointStore interface {
	// SaveCheckpoint stores cp under the rules above and records it in the
	// task's history, or changes nothing and returns the reason.
	SaveCheckpoint(ctx context.Context, cp Checkpoint, now time.Time) (CheckpointResult, error)
	// GetCheckpoint returns the task's newest stored checkpoint with its
	// data, or nil when the task has none. WorkerID is not stored and
	// stays empty.
	GetCheckpoint(ctx context.Context, taskID string) (*Checkpoint, error)
	// CheckpointHistory returns the task's stored checkpoints in the order
	// the store accepted them.
	CheckpointHistory(ctx context.Context, taskID string) ([]CheckpointRecord, error)
}
