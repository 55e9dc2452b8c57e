package host

import (
	"context"
	"fmt"
	"sort"

	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// frameHandlers maps each task frame type that the coordinator sends to the
// host's handler. Session frame types never reach the host, because the
// connector handles them itself.
var frameHandlers = map[string]func(*Host, *wirepb.Frame){
	"state_sync_result": (*Host).handleStateSyncResult,
	"assign":            (*Host).handleAssign,
	"outcome_ack":       (*Host).handleOutcomeAck,
	"cancel_task":       (*Host).handleCancelTask,
	"checkpoint_ack":    (*Host).handleCheckpointAck,
}

// HandledFrameTypes lists the frame types the host handles, sorted.
func HandledFrameTypes() []string {
	types := make([]string, 0, len(frameHandlers))
	for t := range frameHandlers {
		types = append(types, t)
	}
	sort.Strings(types)
	return types
}

// handleFrame decodes one task frame from the connector and dispatches it.
// A frame of a type the host does not handle is logged once per type and
// counted, so a newer coordinator cannot stop an older worker.
func (h *Host) handleFrame(data []byte) {
	frame, err := protocol.Decode(data, 0)
	if err != nil {
		h.logger.Warn("undecodable frame from connector", "error", err, "bytes", len(data))
		h.countUnknown("undecodable")
		return
	}
	frameType := protocol.TypeOf(frame)
	handler, ok := frameHandlers[frameType]
	if !ok {
		h.countUnknown(frameType)
		return
	}
	h.logger.Trace("frame received", "type", frameType)
	handler(h, frame)
}

func (h *Host) countUnknown(frameType string) {
	h.mu.Lock()
	h.unknownFrames[frameType]++
	first := h.unknownFrames[frameType] == 1
	h.mu.Unlock()
	if first {
		h.logger.Warn("ignoring frames of unhandled type; later ones are only counted", "type", frameType)
	}
}

// UnknownFrames returns how many frames of each unhandled type arrived.
func (h *Host) UnknownFrames() map[string]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]uint64, len(h.unknownFrames))
	for t, n := range h.unknownFrames {
		out[t] = n
	}
	return out
}

// sendStateSync sends the coordinator the attempts that run here and the
// outcomes that wait for an acknowledgement. The resender calls it after
// each connect that starts a new session, and again after a failure; a
// resumed session needs none.
func (h *Host) sendStateSync(ctx context.Context) error {
	h.mu.Lock()
	session := h.session
	sync := &wirepb.StateSync{}
	for _, ref := range sortedRefs(h.running) {
		sync.Running = append(sync.Running, ref.proto())
	}
	for _, ref := range sortedRefs(h.held) {
		sync.HeldOutcomes = append(sync.HeldOutcomes, ref.proto())
	}
	h.mu.Unlock()

	err := h.send(ctx, &wirepb.Frame{Body: &wirepb.Frame_StateSync{StateSync: sync}}, h.sendTimeout)
	if err != nil {
		return fmt.Errorf("send state sync: %w", err)
	}
	h.mu.Lock()
	if h.session == session {
		h.syncPending = false
	}
	h.mu.Unlock()
	h.logger.Debug("state sync sent", "running", len(sync.Running), "held_outcomes", len(sync.HeldOutcomes))
	return nil
}

// handleStateSyncResult cancels the attempts the coordinator no longer
// wants, deletes the held outcomes it applied before, sends the pending
// checkpoints of the others again and then queues every held outcome that
// the connector has not accepted in this session.
func (h *Host) handleStateSyncResult(frame *wirepb.Frame) {
	result := frame.GetStateSyncResult()
	for _, ref := range result.GetCancel() {
		h.cancelTask(refOf(ref), "cancelled by coordinator after state sync")
	}
	for _, ref := range result.GetApplied() {
		h.settleHeld(refOf(ref), true, "applied before the reconnect")
	}
	h.resendPendingCheckpoints()
	h.queueAfterSync()
}

// handleOutcomeAck deletes an acknowledged outcome, applied or not, from
// memory and from the outbox.
func (h *Host) handleOutcomeAck(frame *wirepb.Frame) {
	ack := frame.GetOutcomeAck()
	h.settleHeld(refOf(ack.GetRef()), ack.GetApplied(), ack.GetReason())
}

// settleHeld deletes a held outcome that the coordinator needs no more
// from memory and from the outbox.
func (h *Host) settleHeld(ref taskRef, applied bool, reason string) {
	h.mu.Lock()
	_, held := h.held[ref]
	delete(h.held, ref)
	h.mu.Unlock()
	wake(h.acked)

	logger := h.logger.With("task_id", ref.TaskID, "attempt", ref.Attempt)
	if err := h.outbox.Delete(ref); err != nil {
		// The file is acknowledged; resending it after a restart only
		// yields an applied:false acknowledgement.
		logger.Error("acknowledged outcome not deleted from outbox", "error", err)
	}
	switch {
	case !held:
		logger.Debug("acknowledgement for an outcome not held", "applied", applied)
	case applied && reason != "":
		logger.Info("outcome acknowledged", "reason", reason)
	case applied:
		logger.Info("outcome acknowledged")
	default:
		logger.Info("outcome acknowledged but not applied", "reason", reason)
	}
}

// handleCancelTask cancels a running attempt.
func (h *Host) handleCancelTask(frame *wirepb.Frame) {
	cancel := frame.GetCancelTask()
	reason := cancel.GetReason()
	if reason == "" {
		reason = "cancelled by coordinator"
	}
	h.cancelTask(refOf(cancel.GetRef()), reason)
}

func sortedRefs[V any](m map[taskRef]V) []taskRef {
	refs := make([]taskRef, 0, len(m))
	for ref := range m {
		refs = append(refs, ref)
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].TaskID != refs[j].TaskID {
			return refs[i].TaskID < refs[j].TaskID
		}
		return refs[i].Attempt < refs[j].Attempt
	})
	return refs
}
