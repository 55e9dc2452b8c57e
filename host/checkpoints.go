package host

import (
	"time"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// The host numbers the checkpoints of each running attempt, sends each one
// to the coordinator and keeps the newest one until the coordinator
// acknowledges it or the attempt ends. The outcome of the attempt then
// carries that checkpoint. The connector's send queue serves outcomes before
// checkpoints, so an outcome can overtake the checkpoint frames saved just
// before it. Because the outcome carries the checkpoint, the newest one
// reaches the coordinator even when the attempt fails and the task is
// retried. Only one checkpoint per running attempt is kept, so memory is
// bounded by slots times MaxCheckpointBytes.

// attemptCheckpoints is the checkpoint state of one running attempt,
// guarded by its runningTask's mu.
type attemptCheckpoints struct {
	// sequence is the number of the attempt's newest checkpoint, from 1.
	sequence uint64
	// pending is the newest checkpoint the coordinator has not
	// acknowledged, or nil.
	pending *wirepb.Checkpoint
}

// saveCheckpoint numbers a checkpoint that the executor reported, keeps it
// as the attempt's pending one and sends it to the coordinator. Data over
// protocol.MaxCheckpointBytes, which an executor that bypasses the SDK can
// send, is dropped and logged, because the coordinator would reject it.
func (h *Host) saveCheckpoint(task *runningTask, cp *pb.Checkpoint) {
	logger := h.logger.With("task_id", task.ref.TaskID, "attempt", task.ref.Attempt)
	if size := len(cp.GetData()); size > protocol.MaxCheckpointBytes {
		logger.Warn("checkpoint from executor dropped: data exceeds the size limit",
			"bytes", size, "limit_bytes", protocol.MaxCheckpointBytes)
		return
	}

	task.mu.Lock()
	task.checkpoints.sequence++
	frame := &wirepb.Checkpoint{
		Ref:         task.ref.proto(),
		Sequence:    task.checkpoints.sequence,
		Data:        cp.GetData(),
		Fraction:    cp.GetFraction(),
		Message:     dtfplugin.BoundMessage(cp.GetMessage()),
		SavedUnixMs: time.Now().UnixMilli(),
	}
	task.checkpoints.pending = frame
	task.mu.Unlock()

	logger.Trace("checkpoint saved", "sequence", frame.GetSequence(), "bytes", len(frame.GetData()))
	h.sendCheckpoint(frame)
}

// sendCheckpoint hands a checkpoint frame to the connector without waiting
// for it. A frame that does not reach the connector stays pending, so it is
// sent again after the next state sync or carried by the outcome.
func (h *Host) sendCheckpoint(cp *wirepb.Checkpoint) {
	h.sendBestEffort(&wirepb.Frame{Body: &wirepb.Frame_Checkpoint{Checkpoint: cp}})
}

// takePendingCheckpoint removes and returns the attempt's pending
// checkpoint, or nil. The caller attaches it to the attempt's outcome.
func (t *runningTask) takePendingCheckpoint() *wirepb.Checkpoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	cp := t.checkpoints.pending
	t.checkpoints.pending = nil
	return cp
}

// attachCheckpoint puts the attempt's pending checkpoint into its outcome.
func (h *Host) attachCheckpoint(task *runningTask, outcome *wirepb.TaskOutcome) {
	if cp := task.takePendingCheckpoint(); cp != nil {
		outcome.Checkpoint = cp
		h.logger.Debug("outcome carries the unacknowledged checkpoint", "task_id", task.ref.TaskID,
			"attempt", task.ref.Attempt, "sequence", cp.GetSequence())
	}
}

// checkpointLogInterval is the shortest time between two warnings about
// rejected checkpoints of one task.
const checkpointLogInterval = 10 * time.Second

// handleCheckpointAck clears the pending checkpoint of a running attempt
// when the acknowledgement covers its sequence, applied or not, because the
// coordinator has decided about it. An acknowledgement of an
// older sequence leaves the newer pending checkpoint in place.
func (h *Host) handleCheckpointAck(frame *wirepb.Frame) {
	ack := frame.GetCheckpointAck()
	ref := refOf(ack.GetRef())
	logger := h.logger.With("task_id", ref.TaskID, "attempt", ref.Attempt, "sequence", ack.GetSequence())

	h.mu.Lock()
	task := h.running[ref]
	h.mu.Unlock()
	if task == nil {
		// The attempt ended here, and its outcome carries its newest
		// checkpoint, so the copies that trail it after a reconnect are
		// expected to be rejected.
		logger.Debug("checkpoint acknowledgement for an attempt that no longer runs here",
			"applied", ack.GetApplied(), "reason", ack.GetReason())
		return
	}
	if !ack.GetApplied() {
		h.checkpointLogs.Warn(logger, ref.TaskID, "checkpoint of a running attempt rejected by coordinator",
			"reason", ack.GetReason())
	}
	task.mu.Lock()
	defer task.mu.Unlock()
	if pending := task.checkpoints.pending; pending != nil && pending.GetSequence() <= ack.GetSequence() {
		task.checkpoints.pending = nil
	}
}

// resendPendingCheckpoints sends the pending checkpoint of every running
// attempt again. It runs after a state sync result, because a new session
// starts with an empty send queue and the frames sent while no session was
// open never reached the coordinator.
func (h *Host) resendPendingCheckpoints() {
	h.mu.Lock()
	tasks := make([]*runningTask, 0, len(h.running))
	for _, task := range h.running {
		tasks = append(tasks, task)
	}
	h.mu.Unlock()
	for _, task := range tasks {
		task.mu.Lock()
		cp := task.checkpoints.pending
		cancelled := task.cancelReason != ""
		task.mu.Unlock()
		// A cancelled attempt's checkpoint would only be rejected as stale.
		if cp != nil && !cancelled {
			h.sendCheckpoint(cp)
		}
	}
}

// pendingCheckpoint returns the attempt's pending checkpoint, or nil when
// the attempt is not running or has none.
func (h *Host) pendingCheckpoint(ref taskRef) *wirepb.Checkpoint {
	h.mu.Lock()
	task := h.running[ref]
	h.mu.Unlock()
	if task == nil {
		return nil
	}
	task.mu.Lock()
	defer task.mu.Unlock()
	return task.checkpoints.pending
}

// executeCheckpoint converts the checkpoint of an Assign into the one the
// executor resumes from; nil stays nil.
func executeCheckpoint(cp *wirepb.Checkpoint) *pb.Checkpoint {
	if cp == nil {
		return nil
	}
	return &pb.Checkpoint{
		Data:     cp.GetData(),
		Fraction: cp.GetFraction(),
		Message:  cp.GetMessage(),
		Attempt:  cp.GetRef().GetAttempt(),
		Sequence: cp.GetSequence(),
	}
}
