package coordinator

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dtf-io/dtf/protocol/pb"
)

// Bounds of the retry hint sent with CODE_OVERLOADED. The floor keeps a
// rejected worker from dialing again before its previous connection has
// closed; the ceiling keeps a worker from waiting minutes behind a backlog
// that an attack or a bug inflated.
const (
	minOverloadRetry = 50 * time.Millisecond
	maxOverloadRetry = time.Minute
)

// sessionAdmission is the token bucket that limits new and resumed sessions
// per second, and the backlog of the hellos it rejected.
type sessionAdmission struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	// backlogEnd is when the workers rejected so far can all have been
	// admitted at the bucket's rate. Each rejection moves it by one token's
	// time, and the retry hints spread over the time until it.
	backlogEnd time.Time
}

func newSessionAdmission(perSecond, burst int, now time.Time) *sessionAdmission {
	return &sessionAdmission{
		rate:   float64(perSecond),
		burst:  float64(burst),
		tokens: float64(burst),
		last:   now,
	}
}

// admit takes a token at now. When none is left it returns false and the
// time the worker is to wait: a random point in the second half of the
// backlog's span, so that rejected workers return spread out at about the
// bucket's rate instead of together.
func (a *sessionAdmission) admit(now time.Time) (bool, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if elapsed := now.Sub(a.last).Seconds(); elapsed > 0 {
		a.tokens = min(a.burst, a.tokens+elapsed*a.rate)
		a.last = now
	}
	if a.tokens >= 1 {
		a.tokens--
		return true, 0
	}

	perToken := time.Duration(float64(time.Second) / a.rate)
	if a.backlogEnd.Before(now) {
		a.backlogEnd = now
	}
	if a.backlogEnd.Sub(now) < maxOverloadRetry {
		a.backlogEnd = a.backlogEnd.Add(perToken)
	}
	span := a.backlogEnd.Sub(now)
	retry := span/2 + rand.N(span/2+1)
	return false, min(max(retry, minOverloadRetry), maxOverloadRetry)
}

// admitSession applies the session rate limit to a hello. Rejections are
// logged at most once per second with their count.
func (s *Server) admitSession(hello *pb.Hello, remote string) (bool, time.Duration) {
	now := time.Now()
	ok, retryAfter := s.admission.admit(now)
	if ok {
		return true, 0
	}
	s.overloadedRejects.Add(1)
	if n, first := s.overloadLog.count(now); first {
		s.log.Named("session").Warn("hello rejected: session rate limit reached",
			"worker_id", hello.GetWorkerId(), "remote_addr", remote, "retry_after", retryAfter,
			"max_sessions_per_second", s.cfg.Workers.MaxSessionsPerSecond,
			"session_burst", s.cfg.Workers.SessionBurst, "rejected_since_last_log", n)
	}
	return false, retryAfter
}

// logLimiter lets a repeated warning through at most once per second and
// counts the repeats in between.
type logLimiter struct {
	mu      sync.Mutex
	last    time.Time
	pending int
}

// count records one occurrence at now. It returns true when the caller
// logs it, with the number of occurrences since the previous log, this one
// included.
func (l *logLimiter) count(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending++
	if !l.last.IsZero() && now.Sub(l.last) < time.Second {
		return 0, false
	}
	n := l.pending
	l.pending = 0
	l.last = now
	return n, true
}
