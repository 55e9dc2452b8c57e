package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// frameHandler handles one received frame of an open session.
type frameHandler func(s *Server, ss *session, c *connection, frame *pb.Frame)

// frameHandlers maps every frame type a worker sends (protocol.Directions
// ToCoordinator or Both) to its handler. A test checks that it covers them.
var frameHandlers = map[string]frameHandler{
	"hello":         (*Server).handleRepeatedHello,
	"proof":         (*Server).handleLateProof,
	"heartbeat":     (*Server).handleHeartbeat,
	"state_sync":    (*Server).handleStateSync,
	"task_started":  (*Server).handleTaskStarted,
	"task_progress": (*Server).handleTaskProgress,
	"task_outcome":  (*Server).handleTaskOutcome,
	"checkpoint":    (*Server).handleCheckpoint,
	"draining":      (*Server).handleDraining,
	// handleWorkerMetrics is in workermetrics.go.
	"worker_metrics": (*Server).handleWorkerMetrics,
	"plugin_list":    (*Server).handlePluginList,
}

// HandledFrameTypes returns the frame types the coordinator handles, sorted.
func HandledFrameTypes() []string {
	types := make([]string, 0, len(frameHandlers))
	for t := range frameHandlers {
		types = append(types, t)
	}
	sort.Strings(types)
	return types
}

// dispatch runs the handler of a frame's type. Frames of unknown or
// coordinator-only types are counted and logged once per session and type
// kind, and never end the session, so newer workers can add frame types.
func (s *Server) dispatch(ss *session, c *connection, frame *pb.Frame) {
	typ := protocol.TypeOf(frame)
	ss.log.Trace("frame received", "type", typ, "seq", frame.GetSeq())
	if handler, ok := frameHandlers[typ]; ok {
		handler(s, ss, c, frame)
		return
	}
	if typ == protocol.TypeUnknown {
		s.unknownFrames.Add(1)
	} else {
		s.unexpectedFrames.Add(1)
	}
	if !c.unknownLogged {
		c.unknownLogged = true
		ss.log.Warn("ignoring frame the coordinator does not handle; further ones are only counted",
			"type", typ)
	}
}

func (s *Server) handleRepeatedHello(ss *session, c *connection, _ *pb.Frame) {
	s.countFrameReject(frameHandshakeType)
	s.connLog.Warn(ss.log, "late hello/"+ss.workerID, "hello received on an open connection; closing it")
	c.close(rejectFrame(rejectProtocolError, "hello is only valid as the first frame", 0), "repeated hello")
}

// handleLateProof closes a connection whose worker sends a proof after
// the handshake, where it has no meaning.
func (s *Server) handleLateProof(ss *session, c *connection, _ *pb.Frame) {
	s.countFrameReject(frameHandshakeType)
	s.connLog.Warn(ss.log, "late proof/"+ss.workerID, "proof received on an open connection; closing it")
	c.close(rejectFrame(rejectProtocolError, "proof is only valid in the handshake, after a challenge", 0),
		"proof after the handshake")
}

// handleHeartbeat replies to a worker's heartbeat. A reply to the
// coordinator's own heartbeat is a round-trip sample, from which the
// connection's heartbeat interval and read timeout adapt.
func (s *Server) handleHeartbeat(ss *session, c *connection, frame *pb.Frame) {
	hb := frame.GetHeartbeat()
	if !hb.GetReply() {
		c.enqueue(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
			SentUnixNano: time.Now().UnixNano(),
			Reply:        true,
			EchoUnixNano: hb.GetSentUnixNano(),
		}}})
		return
	}
	if hb.GetEchoUnixNano() == 0 {
		return
	}
	sample := time.Since(time.Unix(0, hb.GetEchoUnixNano()))
	if sample < 0 {
		return
	}
	ss.rtt.Add(sample)
	interval, timeout := s.adaptHeartbeat(ss)
	c.setHeartbeat(interval, timeout)
	srtt, _, _ := ss.rtt.Get()
	s.mu.Lock()
	if state := s.workers[ss.workerID]; state != nil {
		state.rtt = srtt
	}
	s.mu.Unlock()
	ss.log.Trace("heartbeat round trip", "rtt", sample, "srtt", srtt, "heartbeat_timeout", timeout)
}

// adaptHeartbeat returns the heartbeat interval and timeout for the
// session's measured round-trip time, within the configured bounds.
func (s *Server) adaptHeartbeat(ss *session) (interval, timeout time.Duration) {
	w := s.cfg.Workers
	srtt, rttvar, _ := ss.rtt.Get()
	return protocol.AdaptHeartbeat(srtt, rttvar, protocol.HeartbeatBounds{
		Interval:   w.HeartbeatInterval,
		Timeout:    w.HeartbeatTimeout,
		MaxTimeout: w.MaxHeartbeatTimeout,
	})
}

type refKey struct {
	taskID  string
	attempt int
}

// handleStateSync reconciles the worker's report with the store. Attempts
// that the store has on this worker and the worker no longer has are
// requeued. Reported attempts that are not their task's current running
// attempt are cancelled. Only then does the scheduler consider the session.
func (s *Server) handleStateSync(ss *session, _ *connection, frame *pb.Frame) {
	sync := frame.GetStateSync()
	ctx, cancel := storeContext()
	defer cancel()

	reported := map[refKey]bool{}
	for _, ref := range sync.GetHeldOutcomes() {
		reported[refKey{ref.GetTaskId(), int(ref.GetAttempt())}] = true
	}
	result := &pb.StateSyncResult{}
	for _, ref := range sync.GetRunning() {
		reported[refKey{ref.GetTaskId(), int(ref.GetAttempt())}] = true
		task, err := s.store.GetTask(ctx, ref.GetTaskId())
		switch {
		case errors.Is(err, store.ErrNotFound):
			result.Cancel = append(result.Cancel, ref)
		case err != nil:
			s.endForSync(ss, "state sync failed", err)
			return
		case task.State == api.StateRunning && task.Attempt == int(ref.GetAttempt()) &&
			task.WorkerID == ss.workerID:
			result.Keep = append(result.Keep, ref)
		default:
			result.Cancel = append(result.Cancel, ref)
		}
	}

	if err := s.requeueMissing(ctx, ss, reported); err != nil {
		s.endForSync(ss, "state sync failed", err)
		return
	}
	heldOutcomes := attemptRefs(sync.GetHeldOutcomes())
	applied, err := s.appliedOutcomes(ctx, ss, heldOutcomes)
	if err != nil {
		s.endForSync(ss, "state sync failed", err)
		return
	}
	result.Applied = applied
	// An applied outcome ended its attempt, so only the others can hold.
	// A running attempt that the result cancels is held too: when the
	// coordinator ended it as lost, the worker's report of the cancel
	// carries the attempt's newest checkpoint, which the next attempt
	// should resume from.
	if err := s.holdAttempts(ctx, ss, append(heldOutcomes, attemptRefs(result.Cancel)...)); err != nil {
		s.endForSync(ss, "state sync failed", err)
		return
	}
	s.metrics.stateSyncs.Add(1)
	s.connLog.Info(ss.log, "synced/"+ss.workerID, "worker state synced", "running", len(sync.GetRunning()),
		"held_outcomes", len(sync.GetHeldOutcomes()), "keep", len(result.Keep), "cancel", len(result.Cancel),
		"applied", len(result.Applied))
	if ss.enqueue(&pb.Frame{Body: &pb.Frame_StateSyncResult{StateSyncResult: result}}) {
		ss.synced.Store(true)
		s.kickScheduler()
	}
}

// attemptRefs converts wire task references to the store's.
func attemptRefs(refs []*pb.TaskRef) []store.AttemptRef {
	out := make([]store.AttemptRef, len(refs))
	for i, ref := range refs {
		out[i] = store.AttemptRef{TaskID: ref.GetTaskId(), Attempt: int(ref.GetAttempt())}
	}
	return out
}

// appliedOutcomes returns the held outcomes of the worker that the store
// applied before, so the worker deletes them instead of sending them again.
func (s *Server) appliedOutcomes(ctx context.Context, ss *session, refs []store.AttemptRef) ([]*pb.TaskRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	applied, err := s.store.AppliedOutcomes(ctx, ss.workerID, refs)
	if err != nil {
		return nil, err
	}
	out := make([]*pb.TaskRef, len(applied))
	for i, ref := range applied {
		out[i] = &pb.TaskRef{TaskId: ref.TaskID, Attempt: uint32(ref.Attempt)}
	}
	return out, nil
}

// lateOutcomeHold is how long a queued task waits for the outcome of its
// lost attempt, which the worker listed in its state sync and sends right
// after the result, or replays right after the Welcome of a resume. It
// also covers the report of a cancel, which the executor sends once its
// task stopped, within the host's stop grace of 5 seconds.
const lateOutcomeHold = 10 * time.Second

// holdAttempts keeps the queued tasks whose current attempt is one of refs,
// lost on the session's worker, out of the scheduler for lateOutcomeHold.
// Without the hold, the scheduler could start such a task again, even on
// this worker, just before the attempt's outcome arrives, and the outcome
// would then be rejected as stale.
func (s *Server) holdAttempts(ctx context.Context, ss *session, refs []store.AttemptRef) error {
	n, err := s.store.HoldForLateOutcomes(ctx, ss.workerID, refs, time.Now().Add(lateOutcomeHold))
	if err != nil {
		return err
	}
	if n > 0 {
		ss.log.Info("queued tasks held for the late outcomes of their lost attempts", "tasks", n,
			"hold", lateOutcomeHold)
	}
	return nil
}

// endForSync ends a session after a store failure that left a frame of the
// worker unhandled. The worker cannot resume the session, so it starts a
// new one, syncs its state and sends its held outcomes again.
func (s *Server) endForSync(ss *session, reason string, err error) {
	ss.log.Error(reason+"; ending the session so the worker syncs again", "error", err)
	ss.end(rejectFrame(rejectRegisterAgain, reason+"; start a new session", 0), reason)
}

// requeueMissing ends as lost the running attempts of the worker that it
// did not report. Attempts assigned through this session are skipped,
// because their Assign may still be in flight and they cannot be lost
// without the session ending.
func (s *Server) requeueMissing(ctx context.Context, ss *session, reported map[refKey]bool) error {
	running, err := s.store.RunningAttempts(ctx, ss.workerID)
	if err != nil {
		return err
	}
	for _, r := range running {
		if reported[refKey{r.TaskID, r.Attempt}] || ss.wasAssigned(r.TaskID, r.Attempt) {
			continue
		}
		reason := fmt.Sprintf("worker %s no longer had the attempt when it reconnected", ss.workerID)
		s.loseAttempt(ctx, r, reason)
	}
	return nil
}

// loseAttempt ends an attempt as lost and logs where its task went.
func (s *Server) loseAttempt(ctx context.Context, r store.RunningAttempt, reason string) {
	s.endAttempt(ctx, r, store.AttemptLost, reason)
}

func (s *Server) handleTaskStarted(ss *session, _ *connection, frame *pb.Frame) {
	ref := frame.GetTaskStarted().GetRef()
	ss.log.Debug("task started", "task_id", ref.GetTaskId(), "attempt", ref.GetAttempt())
}

func (s *Server) handleTaskProgress(ss *session, _ *connection, frame *pb.Frame) {
	p := frame.GetTaskProgress()
	ss.log.Trace("task progress", "task_id", p.GetRef().GetTaskId(), "attempt", p.GetRef().GetAttempt(),
		"fraction", p.GetFraction(), "message", p.GetMessage())
}

// handleTaskOutcome applies an outcome fenced by its attempt and worker,
// and acknowledges it only after the store committed the decision.
func (s *Server) handleTaskOutcome(ss *session, _ *connection, frame *pb.Frame) {
	o := frame.GetTaskOutcome()
	ref := o.GetRef()
	log := ss.log.With("task_id", ref.GetTaskId(), "attempt", ref.GetAttempt())
	if ref.GetTaskId() == "" {
		log.Warn("task outcome without a task reference ignored")
		return
	}

	outcome := outcomeFromFrame(ss.workerID, o)
	outcome.RetryBackoff = s.retryBackoff
	outcome.Checkpoint = s.outcomeCheckpoint(log, ss.workerID, o)
	ctx, cancel := storeContext()
	defer cancel()
	res, err := s.store.ApplyOutcome(ctx, outcome, time.Now())
	if err != nil {
		// No acknowledgement: the worker keeps the outcome and sends it
		// again after the state sync of its next session.
		log.Error("apply outcome failed", "error", err)
		s.endForSync(ss, "apply outcome failed", err)
		return
	}
	// Counted before the acknowledgement goes out, as checkpoints are, and
	// the scheduler is woken after it, so that the freed slot's next Assign
	// follows the acknowledgement.
	if res.Checkpoint != nil {
		s.logCheckpoint(log.With("sequence", o.GetCheckpoint().GetSequence()), len(o.GetCheckpoint().GetData()),
			*res.Checkpoint)
	}
	s.logOutcome(log, outcome, res)
	ss.enqueue(&pb.Frame{Body: &pb.Frame_OutcomeAck{OutcomeAck: &pb.OutcomeAck{
		Ref:     ref,
		Applied: res.Applied,
		Reason:  res.Reason,
	}}})
	if res.Applied {
		s.kickScheduler()
	}
}

// logOutcome logs the decision on an outcome and counts the rejected ones.
// A duplicate, as after a replay, is expected and logged at debug; any
// other rejection is an outcome of a superseded attempt.
func (s *Server) logOutcome(log hclog.Logger, o store.Outcome, res store.OutcomeResult) {
	switch {
	case res.Applied && res.Requeued:
		log.Info("attempt ended; task requeued", "status", o.Status, "retryable", o.Retryable,
			"released", o.Released, "message", o.Message)
	case res.Applied && res.Late:
		log.Info("task finished by the late outcome of a lost attempt; no newer attempt had started",
			"status", o.Status, "exit_code", o.ExitCode)
	case res.Applied:
		log.Info("task finished", "status", o.Status, "exit_code", o.ExitCode)
	case res.Duplicate:
		s.duplicateOutcomes.Add(1)
		log.Debug("duplicate outcome ignored", "reason", res.Reason)
	case res.LostCancel:
		s.lostCancelOutcomes.Add(1)
		log.Info("worker confirmed the cancel of an attempt the coordinator had ended as lost",
			"reason", res.Reason)
	default:
		s.staleOutcomes.Add(1)
		current, state := 0, ""
		if res.Task != nil {
			current, state = res.Task.Attempt, res.Task.State
		}
		log.Warn("outcome rejected", "reason", res.Reason, "current_attempt", current, "task_state", state)
	}
}

// handleDraining marks the session as draining: the scheduler assigns it
// nothing more, and when the worker leaves, the coordinator records it as
// drained rather than lost. Attempts still running when it leaves get the
// grace period of any disconnected worker.
func (s *Server) handleDraining(ss *session, _ *connection, frame *pb.Frame) {
	d := frame.GetDraining()
	if ss.draining.Swap(true) {
		return
	}
	deadline := ""
	if ms := d.GetDeadlineUnixMs(); ms > 0 {
		deadline = time.UnixMilli(ms).UTC().Format(time.RFC3339)
	}
	ss.log.Info("worker draining; assigning it no more tasks", "reason", d.GetReason(),
		"release_deadline", deadline)
	s.recordDraining(ss, d.GetReason())
}

func outcomeFromFrame(workerID string, o *pb.TaskOutcome) store.Outcome {
	out := store.Outcome{
		TaskID:   o.GetRef().GetTaskId(),
		Attempt:  int(o.GetRef().GetAttempt()),
		WorkerID: workerID,
		ExitCode: int(o.GetExitCode()),
		Message:  o.GetMessage(),
		Output:   string(o.GetOutput()),
		// A retryable or released outcome changes how the task continues,
		// never which attempt it belongs to, so the fence applies as usual.
		Retryable: o.GetRetryable(),
		Released:  o.GetReleased(),
	}
	switch o.GetStatus() {
	case pb.Status_STATUS_SUCCEEDED:
		out.Status = api.StateSucceeded
	case pb.Status_STATUS_CANCELLED:
		out.Status = api.StateCancelled
	case pb.Status_STATUS_TIMED_OUT:
		out.Status = api.StateTimedOut
	case pb.Status_STATUS_FAILED:
		out.Status = api.StateFailed
	default:
		out.Status = api.StateFailed
		out.Message = fmt.Sprintf("worker sent status %s; recorded as failed. %s", o.GetStatus(), o.GetMessage())
	}
	if result := o.GetResult(); len(result) > 0 {
		if json.Valid(result) {
			out.Result = json.RawMessage(result)
		} else {
			// Keep a result that is not JSON as a JSON string, so the API
			// response stays valid JSON.
			quoted, _ := json.Marshal(string(result))
			out.Result = quoted
		}
	}
	if ms := o.GetStartedUnixMs(); ms > 0 {
		out.Started = time.UnixMilli(ms).UTC()
	}
	if ms := o.GetFinishedUnixMs(); ms > 0 {
		out.Finished = time.UnixMilli(ms).UTC()
	}
	return out
}

func cancelFrame(taskID string, attempt int, reason string) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_CancelTask{CancelTask: &pb.CancelTask{
		Ref:    &pb.TaskRef{TaskId: taskID, Attempt: uint32(attempt)},
		Reason: reason,
	}}}
}
