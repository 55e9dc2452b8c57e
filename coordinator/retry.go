package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
)

// retryBackoff returns the delay before the next attempt of a task whose
// attempts failed failures times. The delay doubles from
// retry_backoff_base with each failure up to retry_backoff_max. Half of it
// is fixed, so the delay grows, and half is random, so tasks that failed
// together, as when one worker died, do not return together.
func (s *Server) retryBackoff(failures int) time.Duration {
	base, ceiling := s.cfg.RetryBackoffBase, s.cfg.RetryBackoffMax
	if base <= 0 || failures < 1 {
		return 0
	}
	delay := base
	// failures is at most max_attempts, so the loop is short, and it stops
	// at the ceiling before the doubling could overflow.
	for i := 1; i < failures && delay < ceiling; i++ {
		delay *= 2
	}
	delay = min(delay, ceiling)
	half := delay / 2
	return half + rand.N(delay-half+1)
}

// expireTimeouts ends as timed out every running attempt that ran past its
// task's timeout plus task_timeout_grace, and sends its worker a
// CancelTask. The worker enforces the timeout itself; this catches a
// worker whose host hangs, or that cannot report.
func (s *Server) expireTimeouts() {
	ctx, cancel := storeContext()
	defer cancel()
	running, err := s.store.RunningAttempts(ctx, "")
	if err != nil {
		s.log.Named("scheduler").Error("list running attempts failed", "error", err)
		return
	}
	now := time.Now()
	grace := s.cfg.TaskTimeoutGrace
	for _, r := range running {
		if r.TimeoutMS <= 0 {
			continue
		}
		timeout := time.Duration(r.TimeoutMS) * time.Millisecond
		if now.Before(r.Started.Add(timeout + grace)) {
			continue
		}
		reason := fmt.Sprintf("attempt ran past its timeout %s plus task_timeout_grace %s", timeout, grace)
		if !s.endAttempt(ctx, r, store.AttemptTimedOut, reason) {
			continue
		}
		if ss := s.sessionFor(r.WorkerID); ss != nil {
			ss.enqueue(cancelFrame(r.TaskID, r.Attempt, reason))
		}
	}
}

// endAttempt ends a running attempt without an outcome, as lost or timed
// out, logs where its task went and reports whether it ended the attempt.
func (s *Server) endAttempt(ctx context.Context, r store.RunningAttempt, state, reason string) bool {
	log := s.log.Named("scheduler").With("task_id", r.TaskID, "attempt", r.Attempt, "worker_id", r.WorkerID)
	task, err := s.store.EndAttempt(ctx, store.AttemptEnd{
		TaskID:  r.TaskID,
		Attempt: r.Attempt,
		State:   state,
		Reason:  reason,
		Backoff: s.retryBackoff,
	}, time.Now())
	if errors.Is(err, store.ErrConflict) {
		log.Debug("attempt already ended", "error", err)
		return false
	}
	if err != nil {
		log.Error("end attempt failed", "state", state, "error", err)
		return false
	}
	switch {
	case task.State == api.StateQueued && !task.NotBefore.IsZero():
		log.Info("attempt ended; task requeued", "state", state, "reason", reason,
			"not_before", task.NotBefore.Format(time.RFC3339Nano))
	case task.State == api.StateQueued:
		log.Info("attempt ended; task requeued", "state", state, "reason", reason)
	default:
		log.Warn("attempt ended; task ended after its last attempt", "state", state, "reason", reason,
			"task_state", task.State, "max_attempts", task.MaxAttempts)
	}
	s.kickScheduler()
	return true
}
