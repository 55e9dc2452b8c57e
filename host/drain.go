package host

import (
	"context"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// A stopping host gives back, or releases, the attempts it will not finish:
// each gets a failed outcome with retryable and released set, so the
// coordinator queues the task again without counting the attempt against
// max_attempts. A coordinator that does not know released still retries it
// as a retryable failure.
//
// A drain (Drain, SIGTERM in the dtf command) stops taking tasks, sends the
// coordinator a Draining frame with its deadline, and keeps the session and
// its heartbeats up while the running attempts finish. At the deadline,
// cfg.DrainTimeout after the start, it releases the attempts still running.
// It then waits up to cfg.ShutdownTimeout for the acknowledgements of
// every held outcome and returns, and Run stops the plugins and returns nil.
//
// An immediate stop (Run's context ends, SIGINT or a second SIGTERM in the
// dtf command) releases every attempt at once, also during a drain. It
// then waits at most releaseHandoffTimeout for the connector to accept the
// outcomes and closes the session. Outcomes that miss it stay in the outbox
// for the next start.
//
// Releasing a running attempt stops it through the executor's Stop method
// (stop.go), so the executor can save a last checkpoint, which the
// released outcome carries.

const (
	// releaseHandoffTimeout bounds how long an immediate stop waits for
	// the connector to accept the released outcomes. The connector then
	// writes what it accepted before it closes the session.
	releaseHandoffTimeout = 2 * time.Second
	// stopPollInterval is how often a stopping host checks whether its
	// attempts ended and whether the connector accepted their outcomes.
	stopPollInterval = 20 * time.Millisecond
)

// drainState is a drain under way, or the notice of an immediate stop.
type drainState struct {
	deadline time.Time
	reason   string
	// pending is true until the connector accepted the Draining frame in
	// the current session.
	pending bool
}

// Drain starts a drain of a running host, and Run returns nil when it is
// done. Only the first call has an effect. Cancel Run's context to end a drain
// at once.
func (h *Host) Drain(reason string) {
	h.drainOnce.Do(func() {
		h.drainReason = reason
		close(h.drainRequested)
	})
}

// serve runs the connector until a drain or an immediate stop is done, or
// until the connector gives up for good.
func (h *Host) serve(ctx context.Context, connector pluginProcess) error {
	// The connector outlives ctx, so that an immediate stop can still hand
	// over released outcomes.
	connCtx, stopConnector := context.WithCancel(context.Background())
	defer stopConnector()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer stopConnector()
		select {
		case <-connCtx.Done():
		case <-ctx.Done():
			h.stopNow(connCtx, "the worker stopped at once")
		case <-h.drainRequested:
			h.drain(ctx, connCtx)
		}
	}()
	err := h.superviseConnector(connCtx, connector)
	stopConnector()
	<-stopped
	return err
}

// drain runs a drain to its end. The end of ctx turns it into an immediate
// stop, and the end of connCtx means the connector is gone for good.
func (h *Host) drain(ctx, connCtx context.Context) {
	start := time.Now()
	deadline := start.Add(h.cfg.DrainTimeout)
	h.mu.Lock()
	h.stopping = true
	h.draining = &drainState{deadline: deadline, reason: h.drainReason, pending: true}
	running := len(h.running)
	h.mu.Unlock()
	wake(h.resendNow)
	h.logger.Info("draining: taking no more tasks, running tasks may finish until the deadline",
		"reason", h.drainReason, "running", running, "drain_timeout", h.cfg.DrainTimeout,
		"deadline", deadline.Format(time.RFC3339))
	h.release(false, "not started before the worker began draining")

	h.awaitIdle(ctx, connCtx, deadline)
	if ctx.Err() == nil && connCtx.Err() == nil && h.runningCount() > 0 {
		h.logger.Info("drain timeout passed; releasing running tasks", "running", h.runningCount())
		h.release(true, fmt.Sprintf("the attempt was still running when the worker's "+
			"drain_timeout of %s passed", h.cfg.DrainTimeout))
		h.awaitIdle(ctx, connCtx, time.Now().Add(h.cfg.ShutdownTimeout))
	}
	h.awaitAcks(ctx, connCtx, time.Now().Add(h.cfg.ShutdownTimeout))
	h.awaitLateAssignments(ctx, connCtx, start)

	// A stop request may come at any of the waits above, each of which
	// then returns at once. The immediate stop hands every outcome to the
	// connector before the session closes.
	switch {
	case connCtx.Err() != nil:
		return
	case ctx.Err() != nil:
		h.logger.Warn("drain ended early by a stop request; releasing running tasks")
		h.stopNow(connCtx, "the worker's drain was ended early")
		return
	}
	h.mu.Lock()
	unacknowledged := len(h.held)
	h.mu.Unlock()
	if unacknowledged > 0 {
		h.logger.Warn("drain finished with outcomes the coordinator has not acknowledged; "+
			"they stay in the outbox and are sent on the next start",
			"unacknowledged", unacknowledged, "dir", h.outbox.Dir())
	}
	h.logger.Info("drain finished", "duration", time.Since(start).Round(time.Millisecond))
}

// assignSettle is how long a drain waits after the last assignment before
// it ends. The coordinator stops assigning once it has read the Draining
// frame, but assignments it sent before may still be on their way. The
// host releases those as they arrive, and their outcomes must reach the
// coordinator before the session closes, or the attempts count as lost.
// NOTE: the bound is an estimate of a round trip on a loaded link, not a
// guarantee; an assignment that arrives later still gets a released
// outcome, which waits in the outbox for the next start.
const assignSettle = 500 * time.Millisecond

// maxSettleRounds bounds the rounds of awaitLateAssignments.
const maxSettleRounds = 5

// awaitLateAssignments waits until assignSettle has passed since the
// drain's start and since the last assignment, and then for the
// acknowledgements of the outcomes of the assignments that arrived.
func (h *Host) awaitLateAssignments(ctx, connCtx context.Context, start time.Time) {
	for range maxSettleRounds {
		h.mu.Lock()
		quiet := time.Since(h.lastAssign)
		h.mu.Unlock()
		quiet = min(quiet, time.Since(start))
		if quiet >= assignSettle {
			return
		}
		timer := time.NewTimer(assignSettle - quiet)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return
		case <-connCtx.Done():
			timer.Stop()
			return
		}
		h.awaitIdle(ctx, connCtx, time.Now().Add(h.cfg.ShutdownTimeout))
		h.awaitAcks(ctx, connCtx, time.Now().Add(h.cfg.ShutdownTimeout))
	}
}

// stopNow releases every attempt at once and waits a short while for the
// connector to accept their outcomes and the Draining frame.
func (h *Host) stopNow(connCtx context.Context, reason string) {
	h.mu.Lock()
	h.stopping = true
	running := len(h.running)
	if h.draining == nil {
		// The coordinator learns that the worker leaves on purpose.
		h.draining = &drainState{deadline: time.Now(), reason: "stopping", pending: true}
	}
	h.mu.Unlock()
	if running > 0 {
		h.logger.Info("stopping at once; releasing running tasks", "running", running)
		h.release(true, reason)
	}
	wake(h.resendNow)
	never := context.Background()
	h.awaitIdle(never, connCtx, time.Now().Add(h.cfg.ShutdownTimeout))
	h.awaitHandoff(connCtx, time.Now().Add(releaseHandoffTimeout))
}

// release gives back the attempts that have not started, and with all set
// also those that run.
func (h *Host) release(all bool, reason string) {
	h.mu.Lock()
	tasks := make([]*runningTask, 0, len(h.running))
	for _, task := range h.running {
		tasks = append(tasks, task)
	}
	h.mu.Unlock()
	for _, task := range tasks {
		task.mu.Lock()
		give := (all || !task.started) && task.releaseReason == "" && task.cancelReason == ""
		if give {
			task.releaseReason = reason
		}
		task.mu.Unlock()
		if give {
			h.logger.Info("releasing task", "task_id", task.ref.TaskID, "attempt", task.ref.Attempt,
				"reason", reason)
			h.stopAttempt(task, pb.StopReason_STOP_REASON_RELEASED, reason)
		}
	}
}

func (h *Host) runningCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.running)
}

// awaitIdle waits until no attempt runs, the deadline passes, ctx ends or
// the connector is gone for good.
func (h *Host) awaitIdle(ctx, connCtx context.Context, deadline time.Time) {
	h.awaitCondition(ctx, connCtx, deadline, nil, func() bool { return h.runningCount() == 0 })
}

// awaitAcks waits until the coordinator acknowledged every held outcome.
func (h *Host) awaitAcks(ctx, connCtx context.Context, deadline time.Time) {
	h.awaitCondition(ctx, connCtx, deadline, h.acked, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.held) == 0
	})
}

// awaitHandoff waits until the connector accepted every held outcome and
// the Draining frame in the current session.
func (h *Host) awaitHandoff(connCtx context.Context, deadline time.Time) {
	h.awaitCondition(context.Background(), connCtx, deadline, nil, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.connector == nil || h.offline {
			return true // nothing can be handed over
		}
		if h.draining != nil && h.draining.pending {
			return false
		}
		for _, entry := range h.held {
			if entry.acceptedIn != h.session {
				return false
			}
		}
		return true
	})
}

// awaitCondition polls done until it returns true, the deadline passes or
// either context ends. A signal on signal, if not nil, wakes it early.
func (h *Host) awaitCondition(
	ctx, connCtx context.Context,
	deadline time.Time,
	signal <-chan struct{},
	done func() bool,
) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	ticker := time.NewTicker(stopPollInterval)
	defer ticker.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return
		case <-connCtx.Done():
			return
		case <-timer.C:
			return
		case <-signal:
		case <-ticker.C:
		}
	}
}

// markReleased turns the outcome of a released attempt into a released,
// retryable failure, unless the attempt succeeded before the release took
// effect or the coordinator cancelled it. The executor's exit code and
// output stay.
func markReleased(task *runningTask, outcome *wirepb.TaskOutcome) {
	reason := task.released()
	if reason == "" || task.reason() != "" || outcome.GetStatus() == wirepb.Status_STATUS_SUCCEEDED {
		return
	}
	outcome.Status = wirepb.Status_STATUS_FAILED
	outcome.Retryable = true
	outcome.Released = true
	outcome.Message = reason
}

// sendDraining sends the Draining frame once per session while the host
// stops. The resender calls it after the state sync.
func (h *Host) sendDraining(ctx context.Context) error {
	h.mu.Lock()
	state, session := h.draining, h.session
	pending := state != nil && state.pending
	var frame *wirepb.Frame
	if pending {
		frame = &wirepb.Frame{Body: &wirepb.Frame_Draining{Draining: &wirepb.Draining{
			DeadlineUnixMs: state.deadline.UnixMilli(),
			Reason:         state.reason,
		}}}
	}
	h.mu.Unlock()
	if !pending {
		return nil
	}
	if err := h.send(ctx, frame, h.sendTimeout); err != nil {
		return fmt.Errorf("send draining: %w", err)
	}
	h.mu.Lock()
	if h.session == session {
		state.pending = false
	}
	h.mu.Unlock()
	h.logger.Debug("draining frame sent", "deadline", state.deadline.Format(time.RFC3339))
	return nil
}

func (t *runningTask) released() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.releaseReason
}
