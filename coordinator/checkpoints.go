package coordinator

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol/pb"
)

// checkpointStats counts the checkpoints the coordinator did not store and
// limits the warnings about them, because a worker that lost its attempt
// may keep sending checkpoints every few milliseconds until it learns so.
type checkpointStats struct {
	stale    atomic.Uint64
	rejected atomic.Uint64
	warnLog  logLimiter
}

// handleCheckpoint stores a checkpoint under the store's rules and sends a
// CheckpointAck once the decision is committed, applied or not. A store
// failure is not acknowledged, so the worker keeps the checkpoint pending
// and the attempt's outcome carries it.
func (s *Server) handleCheckpoint(ss *session, _ *connection, frame *pb.Frame) {
	cp := frame.GetCheckpoint()
	ref := cp.GetRef()
	log := ss.log.With("task_id", ref.GetTaskId(), "attempt", ref.GetAttempt(), "sequence", cp.GetSequence())
	if ref.GetTaskId() == "" {
		s.checkpoints.rejected.Add(1)
		log.Warn("checkpoint without a task reference ignored")
		return
	}

	ctx, cancel := storeContext()
	defer cancel()
	res, err := s.store.SaveCheckpoint(ctx, checkpointFromFrame(ss.workerID, cp), time.Now())
	if err != nil {
		log.Error("store checkpoint failed; the worker keeps it for the attempt's outcome", "error", err)
		return
	}
	// Counted before the acknowledgement goes out, so that a reader of the
	// counters after the acknowledgement sees this checkpoint in them.
	s.logCheckpoint(log, len(cp.GetData()), res)
	ss.enqueue(&pb.Frame{Body: &pb.Frame_CheckpointAck{CheckpointAck: &pb.CheckpointAck{
		Ref:      ref,
		Sequence: cp.GetSequence(),
		Applied:  res.Applied,
		Reason:   res.Reason,
	}}})
}

// logCheckpoint logs the decision on a checkpoint and counts the ones not
// stored. A duplicate, as after a replay, is expected and only logged at
// debug level.
func (s *Server) logCheckpoint(log hclog.Logger, size int, res store.CheckpointResult) {
	switch {
	case res.Applied:
		log.Trace("checkpoint stored", "bytes", size)
		return
	case res.Duplicate:
		log.Debug("duplicate checkpoint ignored", "reason", res.Reason)
		return
	case res.Stale:
		s.checkpoints.stale.Add(1)
	default:
		s.checkpoints.rejected.Add(1)
	}
	if n, ok := s.checkpoints.warnLog.count(time.Now()); ok {
		log.Warn("checkpoint rejected", "reason", res.Reason, "stale", res.Stale, "bytes", size,
			"rejected_since_last_log", n)
	}
}

func checkpointFromFrame(workerID string, cp *pb.Checkpoint) store.Checkpoint {
	out := store.Checkpoint{
		TaskID:   cp.GetRef().GetTaskId(),
		Attempt:  int(cp.GetRef().GetAttempt()),
		WorkerID: workerID,
		Sequence: cp.GetSequence(),
		Data:     cp.GetData(),
		Fraction: cp.GetFraction(),
		Message:  cp.GetMessage(),
	}
	if ms := cp.GetSavedUnixMs(); ms > 0 {
		out.Saved = time.UnixMilli(ms).UTC()
	}
	return out
}

// outcomeCheckpoint returns the checkpoint that an outcome carries, or nil.
// It belongs to the outcome's attempt; one that names another task or
// attempt is dropped and counted, because the worker host never sends one.
func (s *Server) outcomeCheckpoint(log hclog.Logger, workerID string, o *pb.TaskOutcome) *store.Checkpoint {
	cp := o.GetCheckpoint()
	if cp == nil {
		return nil
	}
	if cp.GetRef() != nil && (cp.GetRef().GetTaskId() != o.GetRef().GetTaskId() ||
		cp.GetRef().GetAttempt() != o.GetRef().GetAttempt()) {
		s.checkpoints.rejected.Add(1)
		log.Warn("checkpoint of another attempt in an outcome ignored",
			"checkpoint_task_id", cp.GetRef().GetTaskId(), "checkpoint_attempt", cp.GetRef().GetAttempt())
		return nil
	}
	out := checkpointFromFrame(workerID, cp)
	out.TaskID, out.Attempt = o.GetRef().GetTaskId(), int(o.GetRef().GetAttempt())
	return &out
}

// assignCheckpoint returns the task's stored checkpoint as the Assign of
// its next attempt carries it, or nil for a fresh start.
func assignCheckpoint(cp *store.Checkpoint) *pb.Checkpoint {
	if cp == nil {
		return nil
	}
	return &pb.Checkpoint{
		Ref:         &pb.TaskRef{TaskId: cp.TaskID, Attempt: uint32(cp.Attempt)},
		Sequence:    cp.Sequence,
		Data:        cp.Data,
		Fraction:    cp.Fraction,
		Message:     cp.Message,
		SavedUnixMs: cp.Saved.UnixMilli(),
	}
}
