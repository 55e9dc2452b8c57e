package host

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// The connector keeps every frame it accepted in its send queue and replay
// buffer for as long as the session lives, and replays them after a resume.
// The host therefore sends a held outcome again only when the connector has
// not accepted it in the current session: its Send failed or timed out, or
// it was accepted in a session that a new one has since replaced. One
// goroutine, the resender, makes every outcome Send, so no outcome is in two
// Sends at once and a Send that blocks on a full queue holds no task slot.

// Default backoff of the resender after a failed Send. A full send queue
// drains only as fast as the coordinator acknowledges frames, so retrying
// at once would only repeat the failure.
const (
	defaultResendBase = 500 * time.Millisecond
	defaultResendCap  = 30 * time.Second
)

// heldOutcome is the host's record of an outcome that the coordinator has
// not acknowledged.
type heldOutcome struct {
	// memory is the outcome when the outbox has no file of it under its
	// usual name, for example because the write failed. It is nil
	// otherwise, so a backlog of large outputs stays on disk.
	memory *wirepb.TaskOutcome
	// acceptedIn is the number of the session in which the connector last
	// accepted the outcome, or 0 if it never did.
	acceptedIn uint64
	// queued is true while the outcome waits in Host.unsent.
	queued bool
	// replaced is set once the connector rejected the outcome and a
	// failed outcome took its place.
	replaced bool
}

// holdOutcome records a finished attempt's outcome and queues it for the
// resender. memory is nil when the outbox has the outcome's file.
func (h *Host) holdOutcome(ref taskRef, memory *wirepb.TaskOutcome) {
	h.mu.Lock()
	delete(h.running, ref)
	entry := &heldOutcome{memory: memory}
	h.held[ref] = entry
	h.queueLocked(ref, entry)
	h.mu.Unlock()
	wake(h.resendReady)
}

// queueLocked appends a held outcome to the resender's queue unless it is
// queued already. The caller holds h.mu.
func (h *Host) queueLocked(ref taskRef, entry *heldOutcome) {
	if entry.queued {
		return
	}
	entry.queued = true
	h.unsent = append(h.unsent, ref)
}

// startSession records a connected event. A new session replaces the
// connector's queue and replay buffer, so every outcome accepted before is
// void: the resender sends the state sync first, and the state sync result
// queues the held outcomes again. A resumed session keeps what the
// connector accepted, so only the outcomes it did not accept are sent.
func (h *Host) startSession(resumed bool) {
	h.mu.Lock()
	if !resumed {
		h.session++
		h.syncPending = true
		if h.draining != nil {
			h.draining.pending = true
		}
		for _, ref := range h.unsent {
			if entry := h.held[ref]; entry != nil {
				entry.queued = false
			}
		}
		h.unsent = nil
	}
	h.mu.Unlock()
	wake(h.resendNow)
	// The hello carried the connector's list from its launch, which a
	// plugin restart since then has made stale.
	wake(h.pluginsChanged)
}

// queueAfterSync queues, in task order, every held outcome that the
// connector has not accepted in the current session. It runs on the state
// sync result, so the coordinator has processed the state sync before it
// receives these outcomes.
func (h *Host) queueAfterSync() {
	h.mu.Lock()
	queued := 0
	for _, ref := range sortedRefs(h.held) {
		entry := h.held[ref]
		if entry.acceptedIn != h.session && !entry.queued {
			h.queueLocked(ref, entry)
			queued++
		}
	}
	h.mu.Unlock()
	if queued > 0 {
		h.logger.Debug("sending held outcomes after state sync", "count", queued)
	}
	wake(h.resendNow)
}

// queueUnaccepted queues one held outcome unless the connector accepted it
// in the current session. It returns whether the outcome is held.
func (h *Host) queueUnaccepted(ref taskRef) bool {
	h.mu.Lock()
	entry := h.held[ref]
	if entry != nil && entry.acceptedIn != h.session {
		h.queueLocked(ref, entry)
	}
	h.mu.Unlock()
	if entry != nil {
		wake(h.resendReady)
	}
	return entry != nil
}

// wake signals ch without blocking; one pending signal is enough.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// runResender sends the pending state sync and the queued outcomes until
// ctx ends. After a failed Send it waits with exponential backoff and
// jitter. New outcomes do not end that wait, but a connected event or a
// state sync result does, because either can free the connector's queue.
func (h *Host) runResender(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var r resendLog
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.resendNow:
			timer.Stop()
			failures = 0
		case <-h.resendReady:
			if failures > 0 {
				continue
			}
		case <-timer.C:
		}

		err := h.resendPending(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			r.succeeded(h)
			failures = 0
			continue
		}
		failures++
		delay := resendDelay(failures, h.resendBase, h.resendCap)
		r.failed(h, err, delay)
		timer.Reset(delay)
	}
}

// resendLog logs a run of failed Sends once at Warn, its repeats at Debug,
// and its end at Info. A failure while no session is open is expected
// during an outage, so it alone does not warn.
type resendLog struct {
	failures int
	warned   bool
}

func (r *resendLog) failed(h *Host, err error, delay time.Duration) {
	r.failures++
	h.mu.Lock()
	unsent := len(h.unsent)
	h.mu.Unlock()
	if !r.warned && !isUnavailable(err) {
		r.warned = true
		h.logger.Warn("connector did not accept a held outcome; retrying with backoff, "+
			"repeats are logged at debug level", "error", err, "unsent", unsent, "retry_in", delay)
		return
	}
	h.logger.Debug("connector did not accept a held outcome, retrying with backoff",
		"error", err, "unsent", unsent, "failed_sends", r.failures, "retry_in", delay)
}

func (r *resendLog) succeeded(h *Host) {
	if r.warned {
		h.logger.Info("connector accepts held outcomes again", "failed_sends", r.failures)
	}
	*r = resendLog{}
}

// resendDelay returns the wait after failures failed rounds: base doubled
// per earlier failure up to limit, of which the upper half is random, so
// the wait is never close to zero.
func resendDelay(failures int, base, limit time.Duration) time.Duration {
	delay := base
	for i := 1; i < failures && delay < limit; i++ {
		delay *= 2
	}
	delay = min(delay, limit)
	half := delay / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// resendPending sends the pending state sync, the pending Draining frame
// and then the outcomes queued when the call began, oldest first. It stops at the first Send that fails
// for a reason that may pass, leaves that outcome at the head of the queue
// and returns the error. Outcomes queued during the call wait for the next
// signal, so one call is bounded.
func (h *Host) resendPending(ctx context.Context) error {
	h.mu.Lock()
	syncPending := h.syncPending
	count := len(h.unsent)
	h.mu.Unlock()
	if syncPending {
		if err := h.sendStateSync(ctx); err != nil {
			return err
		}
	}
	if err := h.sendDraining(ctx); err != nil {
		return err
	}
	for range count {
		ref, entry, session, ok := h.nextUnsent()
		if !ok {
			return nil
		}
		if err := h.sendHeld(ctx, ref, entry, session); err != nil {
			return err
		}
	}
	return nil
}

// nextUnsent takes the oldest queued outcome that is still held and not
// accepted in the current session, and returns it with that session's
// number.
func (h *Host) nextUnsent() (taskRef, *heldOutcome, uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.unsent) > 0 {
		ref := h.unsent[0]
		h.unsent = h.unsent[1:]
		entry := h.held[ref]
		if entry == nil || !entry.queued {
			continue // acknowledged, or queued again later in the list
		}
		entry.queued = false
		if entry.acceptedIn == h.session {
			continue
		}
		return ref, entry, h.session, true
	}
	h.unsent = nil
	return taskRef{}, nil, 0, false
}

// sendHeld sends one held outcome. On success it records the session in
// which the connector accepted it. A failure that may pass puts it back at
// the head of the queue and is returned. A rejection that cannot pass,
// such as a frame over max_frame_bytes, goes to failRejected, and a
// missing or corrupt outbox file to dropLost, so neither blocks the
// outcomes behind it.
//
// A Send that timed out on the host's side may still have been queued by
// the connector just before the deadline, and a Send under way when a new
// session starts may land in that session. Both count as not accepted in
// the current session, so such an outcome can be sent twice, and the
// coordinator acknowledges the copy with applied = false.
func (h *Host) sendHeld(ctx context.Context, ref taskRef, entry *heldOutcome, session uint64) error {
	outcome, err := h.heldBody(ref, entry)
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, errCorruptOutcome):
		h.dropLost(ref, entry, err)
		return nil
	case err != nil:
		h.requeueFirst(ref, entry)
		return fmt.Errorf("read held outcome: %w", err)
	}

	err = h.send(ctx, &wirepb.Frame{Body: &wirepb.Frame_TaskOutcome{TaskOutcome: outcome}}, h.sendTimeout)
	switch {
	case err == nil:
		h.mu.Lock()
		entry.acceptedIn = session
		h.mu.Unlock()
		return nil
	case status.Code(err) == codes.InvalidArgument:
		h.failRejected(ref, entry, outcome, err)
		return nil
	}
	h.requeueFirst(ref, entry)
	return fmt.Errorf("send outcome of %s: %w", ref, err)
}

// failRejected handles an outcome that the connector rejected for a reason
// that cannot pass, such as a frame over its max_frame_bytes. The outcome
// is replaced with a failed one that names the rejection, which is small
// enough for any frame limit, and sent at once. When the connector rejects
// that one too, the outcome is dropped like a lost one, so no rejected
// outcome stays in the outbox and holds its attempt forever.
func (h *Host) failRejected(ref taskRef, entry *heldOutcome, outcome *wirepb.TaskOutcome, cause error) {
	logger := h.logger.With("task_id", ref.TaskID, "attempt", ref.Attempt)
	h.mu.Lock()
	replacedBefore := entry.replaced
	entry.replaced = true
	h.mu.Unlock()
	if replacedBefore {
		h.dropLost(ref, entry, fmt.Errorf("connector rejected the failed outcome that replaced a rejected "+
			"one: %w", cause))
		return
	}

	logger.Error("connector rejected outcome; it is replaced with a failed outcome that names the rejection",
		"error", cause, "status", outcome.GetStatus().String(), "output_bytes", len(outcome.GetOutput()),
		"result_bytes", len(outcome.GetResult()))
	replacement := proto.Clone(outcome).(*wirepb.TaskOutcome)
	replaceWithFailure(replacement, fmt.Sprintf("the worker's connector plugin rejected this attempt's %s "+
		"outcome (%s), so its output and data were dropped; lower the executor's output or raise "+
		"max_frame_bytes of the connector plugin", strings.ToLower(strings.TrimPrefix(
		outcome.GetStatus().String(), "STATUS_")), status.Convert(cause).Message()))

	h.outboxWrites <- struct{}{}
	err := h.writeOutbox(replacement)
	<-h.outboxWrites
	h.mu.Lock()
	if err != nil || entry.memory != nil {
		entry.memory = replacement
	}
	h.mu.Unlock()
	if err != nil {
		logger.Error("failed outcome not written to outbox; it is kept in memory only", "dir", h.outbox.Dir(),
			"error", err)
	}
	h.requeueFirst(ref, entry)
	wake(h.resendReady)
}

// requeueFirst puts a held outcome back at the head of the resender's
// queue, unless it was acknowledged or queued again meanwhile.
func (h *Host) requeueFirst(ref taskRef, entry *heldOutcome) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held[ref] == entry && !entry.queued {
		entry.queued = true
		h.unsent = append([]taskRef{ref}, h.unsent...)
	}
}

// dropLost stops holding an outcome whose outbox file is missing or
// corrupt, because it can never be sent. The next state sync no longer
// lists the attempt, so the coordinator ends it as lost.
//
// NOTE: until the next new session the coordinator still counts the
// attempt as running here. That session's state sync requeues it, or
// reassign_after does if the worker stays disconnected that long.
func (h *Host) dropLost(ref taskRef, entry *heldOutcome, cause error) {
	h.mu.Lock()
	current := h.held[ref] == entry
	if current {
		delete(h.held, ref)
	}
	h.mu.Unlock()
	if !current {
		return // acknowledged and deleted while it was read
	}
	if errors.Is(cause, errCorruptOutcome) {
		if err := h.outbox.SetAside(ref); err != nil {
			cause = errors.Join(cause, err)
		}
	}
	h.logger.Error("held outcome lost: its outbox file is missing or corrupt; "+
		"the next state sync omits the attempt, so the coordinator ends it as lost and requeues its task",
		"task_id", ref.TaskID, "attempt", ref.Attempt, "dir", h.outbox.Dir(), "error", cause)
}

// heldBody returns the outcome of a held record, from memory or from the
// outbox.
func (h *Host) heldBody(ref taskRef, entry *heldOutcome) (*wirepb.TaskOutcome, error) {
	if entry.memory != nil {
		return entry.memory, nil
	}
	return h.outbox.Get(ref)
}

// isHeld reports whether the host holds an outcome of ref.
func (h *Host) isHeld(ref taskRef) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held[ref] != nil
}
