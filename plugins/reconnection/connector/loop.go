package connector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/plugin/pb"
)

// connectLoop connects, runs each connection until it ends and redials
// after a backoff delay. It returns when ctx ends or after the coordinator
// rejected the credentials FatalAfter times in a row, and its last event is
// always a closed state change.
//
// NOTE: every connection starts a new session (Hello without session_id),
// because frames carry no sequence numbers yet and so cannot be replayed.
func (c *Connector) connectLoop(ctx context.Context, cfg *Config, loop *eventLoop) {
	log := c.log.With("worker_id", cfg.WorkerID)
	backoff := NewBackoff(cfg.Backoff, c.rng)
	var auth authFailures
	var connections uint64
	var last *session

	for {
		attempt := uint32(backoff.Failures() + 1)
		loop.emit(&pb.StateChange{State: StateConnecting, Attempt: attempt})

		// Dial, then run the connection until it ends.
		s, err := c.connect(ctx, cfg, log, loop)
		if err == nil {
			last = s
			auth.reset()
			connections++
			err = c.runSession(ctx, cfg, s, sessionInfo{attempt: attempt, reconnects: connections - 1},
				backoff, loop, log)
		}

		if ctx.Err() != nil {
			emitStopped(ctx, loop, log, attempt)
			return
		}

		// Give up on credentials that keep failing the same way.
		if reason, fatal := auth.check(err, cfg); fatal {
			log.Error("giving up on the coordinator", "url", cfg.URL, "reason", reason)
			loop.emit(&pb.StateChange{State: StateClosed, Reason: reason, Attempt: attempt})
			return
		}

		// Back off, then redial.
		delay := retryDelay(cfg, backoff, err)
		log.Warn("connection failed, backing off", "url", cfg.URL, "error", err,
			"attempt", backoff.Failures(), "delay", delay)
		loop.emit(&pb.StateChange{
			State:           StateBackingOff,
			Reason:          err.Error(),
			Attempt:         uint32(backoff.Failures()),
			NextRetryUnixMs: time.Now().Add(delay).UnixMilli(),
			RttMicros:       rttMicros(last),
		})
		if !sleep(ctx, delay) {
			emitStopped(ctx, loop, log, uint32(backoff.Failures()))
			return
		}
	}
}

// emitStopped reports the end of the loop after ctx ended: a Stop call, or
// the end of the Events stream.
func emitStopped(ctx context.Context, loop *eventLoop, log hclog.Logger, attempt uint32) {
	reason := "stopped"
	if cause := context.Cause(ctx); !errors.Is(cause, errStopped) {
		reason = fmt.Sprintf("events stream ended: %v", cause)
	}
	log.Info("connection loop ended", "reason", reason)
	loop.emit(&pb.StateChange{State: StateClosed, Reason: reason, Attempt: attempt})
}

// connect dials and completes the Hello/Welcome handshake.
func (c *Connector) connect(ctx context.Context, cfg *Config, log hclog.Logger, loop *eventLoop) (*session, error) {
	s, err := dialSession(ctx, cfg, log, c.hooks(loop))
	if err != nil {
		return nil, err
	}
	if err := s.open(ctx, c.version); err != nil {
		return nil, err
	}
	return s, nil
}

// sessionInfo contains the counts that the connected event reports.
type sessionInfo struct {
	attempt    uint32
	reconnects uint64
}

// runSession reports a welcomed connection, runs it until it ends and
// resets the backoff when it stayed up for HealthyAfter.
func (c *Connector) runSession(
	ctx context.Context,
	cfg *Config,
	s *session,
	info sessionInfo,
	backoff *Backoff,
	loop *eventLoop,
	log hclog.Logger,
) error {
	c.stats.connections.Add(1)
	c.setActive(s)
	loop.emit(&pb.StateChange{
		State:      StateConnected,
		Attempt:    info.attempt,
		SessionId:  s.id,
		RttMicros:  rttMicros(s),
		Reconnects: info.reconnects,
	})
	log.Info("connected", "url", cfg.URL, "session_id", s.id, "attempt", info.attempt,
		"reconnects", info.reconnects)

	started := time.Now()
	err := s.run(ctx)
	c.setActive(nil)
	uptime := time.Since(started)
	if uptime >= cfg.HealthyAfter {
		backoff.Reset()
	}
	log.Info("disconnected", "session_id", s.id, "error", err, "uptime", uptime)
	return err
}

// retryDelay records a failure and returns the delay before the next dial.
// An authentication failure waits at least half the cap, because fast
// retries with wrong credentials only load the coordinator; a Reject's
// retry_after_ms is a minimum.
func retryDelay(cfg *Config, backoff *Backoff, err error) time.Duration {
	delay := backoff.Next()
	reject, authFailed := isAuthFailure(err)
	if authFailed {
		delay = max(delay, cfg.Backoff.Cap/2)
	}
	if reject != nil && reject.RetryAfter > delay {
		delay = reject.RetryAfter
	}
	return delay
}

// sleep waits for d and returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// authFailures counts consecutive identical authentication failures. A
// welcome or a different rejection starts the count again. Network errors
// in between neither count nor reset it, because they carry no information
// about the credentials.
type authFailures struct {
	message string
	count   int
}

func (a *authFailures) reset() {
	a.message = ""
	a.count = 0
}

// check records err and returns the closed reason once the same
// authentication failure repeated cfg.FatalAfter times.
func (a *authFailures) check(err error, cfg *Config) (string, bool) {
	reject, authFailed := isAuthFailure(err)
	if !authFailed {
		if reject != nil {
			a.reset()
		}
		return "", false
	}
	if a.count > 0 && reject.Message == a.message {
		a.count++
	} else {
		a.message = reject.Message
		a.count = 1
	}
	if a.count < cfg.FatalAfter {
		return "", false
	}
	return fmt.Sprintf("fatal: coordinator at %s rejected worker_id %q as unauthenticated %d times in a row "+
		"(%s); check the worker's token and worker_id in worker.hcl and the coordinator's token, "+
		"then restart the worker", cfg.URL, cfg.WorkerID, a.count, reject.Message), true
}
