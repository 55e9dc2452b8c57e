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
// after a backoff delay, or after the circuit breaker's cooldown once too
// many attempts in a row failed. It returns when ctx ends, after the
// coordinator rejected the credentials FatalAfter times in a row, or after
// MaxAttempts failed attempts in a row; its last event is always a closed
// state change.
func (c *Connector) connectLoop(ctx context.Context, cfg *Config, loop *eventLoop) {
	// The worker host's logger adds worker_id to every line it relays from
	// this plugin, so the plugin's lines do not repeat it.
	log := c.log
	defer loop.link.close()
	r := &retryState{
		backoff: NewBackoff(cfg.Backoff, c.rng),
		breaker: NewBreaker(cfg.Breaker, c.rng, nil),
	}
	var connections uint64
	var last *session
	// dialReason is the reason the next connecting or resuming change
	// reports, set by whatever ended the previous iteration.
	dialReason := reasonFirstDial

	for {
		attempt := uint32(r.backoff.Failures() + 1)
		// An open breaker whose cooldown has passed turns half open here,
		// so that this dial is its one trial and a failure opens it again.
		if wait := r.breaker.Allow(); wait > 0 && !sleep(ctx, wait) {
			c.emitStopped(ctx, loop, log, attempt)
			return
		}
		if r.breaker.State() == BreakerHalfOpen {
			dialReason = reasonHalfOpenTrial
		}

		_, resumeID := loop.link.resumePoint()
		dialState := StateConnecting
		if resumeID != "" {
			dialState = StateResuming
		}
		c.transition(loop, log, describe(&pb.StateChange{
			State: dialState, Reason: dialReason, Attempt: attempt, SessionId: resumeID,
			Reconnects: c.reconnects(connections),
		}, cfg, last))

		// Dial, then run the connection until it ends.
		s, err := c.connect(ctx, cfg, log, loop)
		if err == nil {
			last = s
			r.succeeded()
			connections++
			err = c.runSession(ctx, cfg, s, sessionInfo{attempt: attempt, reconnects: connections - 1},
				r.backoff, loop, log)
		} else {
			r.failed()
		}

		if ctx.Err() != nil {
			c.emitStopped(ctx, loop, log, attempt)
			return
		}
		if s != nil && s.rotated.Load() {
			// The worker left to log in with its new credential: resume
			// at once, without a backoff delay.
			c.transition(loop, log, describe(&pb.StateChange{
				State: StateBackingOff, Reason: errSecretRotated.Error(), Attempt: attempt,
				NextRetryUnixMs: time.Now().UnixMilli(), Reconnects: c.reconnects(connections),
			}, cfg, last))
			dialReason = reasonRotatedSecret
			continue
		}

		// Give up on credentials that keep failing the same way, or after
		// max_attempts.
		if _, authFailed := isAuthFailure(err); authFailed {
			loop.link.creds.rejectAttempted()
			r.freshSecret = loop.link.creds.fileHasUntried(cfg)
		} else {
			r.freshSecret = false
		}
		reason, fatal := r.auth.check(err, cfg)
		if !fatal && cfg.MaxAttempts > 0 && r.failures >= cfg.MaxAttempts {
			reason, fatal = fmt.Sprintf("fatal: gave up after %d attempts: %v", r.failures, err), true
		}
		if fatal {
			log.Error("giving up on the coordinator", "url", cfg.URL, "reason", reason)
			c.transition(loop, log, describe(&pb.StateChange{
				State: StateClosed, Reason: reason, Attempt: attempt, Reconnects: c.reconnects(connections),
			}, cfg, last))
			return
		}

		// Wait for the backoff delay, or for the breaker's cooldown.
		change, delay := c.nextWait(cfg, r, err, log)
		change.Reconnects = c.reconnects(connections)
		c.transition(loop, log, describe(change, cfg, last))
		if !sleep(ctx, delay) {
			c.emitStopped(ctx, loop, log, change.GetAttempt())
			return
		}
		// After circuit_open, the next Allow turns the breaker half open
		// and the dial reports the trial instead.
		dialReason = reasonBackoffElapsed
	}
}

// Reasons reported with the dial and connected state changes.
const (
	reasonFirstDial      = "connection loop started"
	reasonBackoffElapsed = "backoff delay elapsed"
	reasonHalfOpenTrial  = "half-open trial after the circuit breaker cooldown"
	reasonRotatedSecret  = "logging in again with the rotated credential"
	reasonWelcomed       = "session welcomed"
	reasonResumed        = "session resumed"
	reasonNotResumed     = "new session welcomed, because the coordinator did not resume the previous one"
)

// connectedReason returns the reason of the connected change for the
// welcomed session s.
func connectedReason(s *session) string {
	switch {
	case s.resumed:
		return reasonResumed
	case s.resumeID != "":
		return reasonNotResumed
	default:
		return reasonWelcomed
	}
}

// retryState is what the loop tracks across attempts.
type retryState struct {
	backoff *Backoff
	breaker *Breaker
	auth    authFailures
	// failures counts failed attempts since the last welcome.
	failures int
	// freshSecret is set after an authentication failure when secret_file
	// already holds a credential not yet tried, so the retry need not wait.
	freshSecret bool
}

func (r *retryState) succeeded() {
	r.breaker.Success()
	r.auth.reset()
	r.failures = 0
}

func (r *retryState) failed() {
	r.breaker.Failure()
	r.failures++
}

// nextWait returns the state change to report after a failed or ended
// connection and the delay before the next attempt.
func (c *Connector) nextWait(cfg *Config, r *retryState, err error, log hclog.Logger) (*pb.StateChange, time.Duration) {
	delay := retryDelay(cfg, r.backoff, err, r.freshSecret)
	if r.breaker.State() != BreakerOpen {
		log.Warn("connection failed, backing off", "url", cfg.URL, "error", err,
			"attempt", r.backoff.Failures(), "delay", delay)
		return &pb.StateChange{
			State:           StateBackingOff,
			Reason:          err.Error(),
			Attempt:         uint32(r.backoff.Failures()),
			NextRetryUnixMs: time.Now().Add(delay).UnixMilli(),
		}, delay
	}

	// The cooldown replaces the backoff delay, but a Reject's
	// retry_after_ms stays a minimum.
	wait := time.Until(r.breaker.OpenUntil())
	var reject *RejectError
	if errors.As(err, &reject) && reject.RetryAfter > wait {
		wait = reject.RetryAfter
	}
	log.Warn("circuit breaker open, pausing connection attempts", "url", cfg.URL, "error", err,
		"failures", r.breaker.Failures(), "cooldown", wait)
	return &pb.StateChange{
		State:           StateCircuitOpen,
		Reason:          fmt.Sprintf("%d failed attempts in a row: %v", r.breaker.Failures(), err),
		Attempt:         uint32(r.backoff.Failures()),
		NextRetryUnixMs: time.Now().Add(wait).UnixMilli(),
	}, wait
}

// reconnects returns the number of connections after the first one.
func (c *Connector) reconnects(connections uint64) uint64 {
	if connections == 0 {
		return 0
	}
	return connections - 1
}

// transition moves the state machine and logs a transition that the table
// does not allow, which is a bug in the loop.
func (c *Connector) transition(loop *eventLoop, log hclog.Logger, change *pb.StateChange) {
	if err := loop.machine.Transition(change); err != nil {
		log.Error("connection state machine", "error", err)
	}
}

// emitStopped reports the end of the loop after ctx ended: a Stop call, or
// the end of the Events stream.
func (c *Connector) emitStopped(ctx context.Context, loop *eventLoop, log hclog.Logger, attempt uint32) {
	reason := "stopped"
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errExported):
		reason = cause.Error()
	case !errors.Is(cause, errStopped):
		reason = fmt.Sprintf("events stream ended: %v", cause)
	}
	log.Info("connection loop ended", "reason", reason)
	c.transition(loop, log, &pb.StateChange{State: StateClosed, Reason: reason, Attempt: attempt})
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
	if s.resumed {
		c.stats.resumes.Add(1)
	}
	c.setActive(s)
	c.transition(loop, log, describe(&pb.StateChange{
		State:      StateConnected,
		Reason:     connectedReason(s),
		Attempt:    info.attempt,
		SessionId:  s.id,
		Reconnects: info.reconnects,
		Resumed:    s.resumed,
	}, cfg, s))
	interval, timeout := s.heartbeat()
	log.Info("connected", "url", cfg.URL, "session_id", s.id, "attempt", info.attempt,
		"reconnects", info.reconnects, "resumed", s.resumed,
		"heartbeat_interval", interval, "heartbeat_timeout", timeout)

	started := time.Now()
	go s.watchSecretFile(secretCheckInterval)
	err := s.run(ctx, func() {
		c.transition(loop, log, describe(&pb.StateChange{
			State: StateDraining, Reason: "stopping", SessionId: s.id, Attempt: info.attempt,
		}, cfg, s))
	})
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
// retries with wrong credentials only load the coordinator, unless
// freshSecret reports that secret_file already contains a credential not yet
// tried. A Reject's retry_after_ms is a minimum.
func retryDelay(cfg *Config, backoff *Backoff, err error, freshSecret bool) time.Duration {
	delay := backoff.Next()
	reject, authFailed := isAuthFailure(err)
	if authFailed && !freshSecret {
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
	fix := "check the worker's token and worker_id in worker.hcl and the coordinator's workers.token"
	if cfg.usesCredential() {
		fix = fmt.Sprintf("create a credential with `dtf credentials create -config coordinator.hcl -worker %s`, "+
			"or rotate it with `dtf credentials rotate`, and put the new secret in worker.hcl", cfg.WorkerID)
	}
	times := "once"
	if a.count > 1 {
		times = fmt.Sprintf("%d times in a row", a.count)
	}
	return fmt.Sprintf("fatal: coordinator at %s rejected worker_id %q as unauthenticated %s "+
		"(%s); %s, then restart the worker", cfg.URL, cfg.WorkerID, times, reject.Message, fix), true
}
