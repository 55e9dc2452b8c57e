package connector

import (
	"context"
	"errors"
	"sync"

	"github.com/dtf-io/dtf/protocol/pb"
)

// Priority is a level of the send queue; a lower value is served first.
type Priority int

// Priority levels of outgoing task frames, highest first.
const (
	// PriorityControl carries frames that unblock the peer: state_sync and
	// any acknowledgement-like control frame.
	PriorityControl Priority = iota
	// PriorityOutcome carries task_outcome.
	PriorityOutcome
	// PriorityCheckpoint carries checkpoint.
	PriorityCheckpoint
	// PriorityProgress carries task_started and task_progress.
	PriorityProgress
	// PriorityTelemetry carries worker_metrics and plugin_list, whose loss
	// or delay only makes the coordinator's view of the worker older.
	PriorityTelemetry

	priorityLevels = int(PriorityTelemetry) + 1
)

// starvationLimit is the number of frames of higher levels after which a
// waiting lower level is served once, so a steady stream of outcomes cannot
// hold back progress reports forever.
const starvationLimit = 8

// errQueueClosed is returned by Push after the queue was closed.
var errQueueClosed = errors.New("send queue closed")

// priorityOf returns the send queue level of a task frame type. Unknown
// types go to the control level, because a frame type this build does not
// classify is more likely a protocol frame than bulk data.
func priorityOf(frameType string) Priority {
	switch frameType {
	case "task_outcome":
		return PriorityOutcome
	case "checkpoint":
		return PriorityCheckpoint
	case "task_started", "task_progress":
		return PriorityProgress
	case "worker_metrics", "plugin_list":
		return PriorityTelemetry
	default:
		return PriorityControl
	}
}

// sendQueue holds the task frames that Send accepted and the writer has not
// yet numbered. Each level is a bounded FIFO; Push blocks while its level is
// full. It outlives connections, so frames accepted while disconnected are
// written after the next welcome. It is safe for concurrent use.
type sendQueue struct {
	mu       sync.Mutex
	levels   [priorityLevels][]*pb.Frame
	capacity int
	// skipped counts, per waiting level, the frames of higher levels
	// served since the level was last served.
	skipped [priorityLevels]int
	closed  bool
	// room is closed and replaced whenever a frame leaves the queue.
	room chan struct{}
	// ready has one token while the queue may hold frames.
	ready chan struct{}
}

func newSendQueue(capacity int) *sendQueue {
	return &sendQueue{
		capacity: capacity,
		room:     make(chan struct{}),
		ready:    make(chan struct{}, 1),
	}
}

// Push appends frame to its level, waiting while the level is full until
// ctx ends or the queue closes.
func (q *sendQueue) Push(ctx context.Context, level Priority, frame *pb.Frame) error {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return errQueueClosed
		}
		if len(q.levels[level]) < q.capacity {
			q.levels[level] = append(q.levels[level], frame)
			q.mu.Unlock()
			q.signal()
			return nil
		}
		room := q.room
		q.mu.Unlock()

		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PushFront puts back a frame that Pop returned but the writer could not
// number, so it is the next frame of its level. It may exceed the level's
// capacity by the frames put back.
func (q *sendQueue) PushFront(level Priority, frame *pb.Frame) {
	q.mu.Lock()
	q.levels[level] = append([]*pb.Frame{frame}, q.levels[level]...)
	q.mu.Unlock()
	q.signal()
}

// Pop removes and returns the next frame to write and its level, or nil
// when the queue is empty. It serves the highest non-empty level, except
// that a level passed over starvationLimit times is served first; among
// several such levels the lowest goes first, so none waits longer than
// starvationLimit frames of higher levels.
func (q *sendQueue) Pop() (*pb.Frame, Priority) {
	q.mu.Lock()
	defer q.mu.Unlock()

	serve := -1
	for level := range priorityLevels {
		if len(q.levels[level]) == 0 {
			continue
		}
		if serve < 0 {
			serve = level
		}
		if q.skipped[level] >= starvationLimit {
			serve = level
		}
	}
	if serve < 0 {
		return nil, 0
	}

	// Count the pass-over for every waiting level below the one served.
	for level := serve + 1; level < priorityLevels; level++ {
		if len(q.levels[level]) > 0 {
			q.skipped[level]++
		}
	}
	q.skipped[serve] = 0

	frame := q.levels[serve][0]
	q.levels[serve][0] = nil
	q.levels[serve] = q.levels[serve][1:]
	if len(q.levels[serve]) == 0 {
		q.levels[serve] = nil
	}
	close(q.room)
	q.room = make(chan struct{})
	if q.lenLocked() > 0 {
		q.signal()
	}
	return frame, Priority(serve)
}

// Clear drops every queued frame and returns how many it dropped.
func (q *sendQueue) Clear() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	dropped := q.lenLocked()
	for level := range q.levels {
		q.levels[level] = nil
		q.skipped[level] = 0
	}
	close(q.room)
	q.room = make(chan struct{})
	return dropped
}

// Close wakes every blocked Push, which then fails, and rejects new ones.
func (q *sendQueue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	close(q.room)
	q.room = make(chan struct{})
}

// Len returns the number of queued frames per level.
func (q *sendQueue) Len() [priorityLevels]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	var lengths [priorityLevels]int
	for level := range q.levels {
		lengths[level] = len(q.levels[level])
	}
	return lengths
}

// Queued returns the total number of queued frames.
func (q *sendQueue) Queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lenLocked()
}

// Ready returns a channel that has a value while the queue may hold frames.
// A receive consumes the token; Pop puts it back while frames remain.
func (q *sendQueue) Ready() <-chan struct{} {
	return q.ready
}

// signal puts the ready token back, for a new writer that starts with
// frames already queued.
func (q *sendQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *sendQueue) lenLocked() int {
	total := 0
	for level := range q.levels {
		total += len(q.levels[level])
	}
	return total
}
