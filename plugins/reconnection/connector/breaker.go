package connector

import (
	"math/rand/v2"
	"time"
)

// BreakerState is the state of the circuit breaker in front of the dialer.
type BreakerState string

// Circuit breaker states.
const (
	// BreakerClosed lets every attempt through.
	BreakerClosed BreakerState = "closed"
	// BreakerOpen lets no attempt through until its cooldown has passed.
	BreakerOpen BreakerState = "open"
	// BreakerHalfOpen lets one trial attempt through.
	BreakerHalfOpen BreakerState = "half_open"
)

// breakerJitter is the largest fraction added to a cooldown at random, so
// a fleet that tripped together does not retry together.
const breakerJitter = 0.2

// BreakerPolicy configures the circuit breaker.
type BreakerPolicy struct {
	// FailureThreshold is the number of consecutive failed connection
	// attempts that opens the breaker.
	FailureThreshold int
	// Cooldown is how long the breaker stays open before a trial attempt;
	// up to breakerJitter of it is added at random.
	Cooldown time.Duration
}

// Breaker is a circuit breaker over connection attempts: closed until
// FailureThreshold attempts in a row fail, then open for a jittered
// cooldown, then half open for one trial attempt whose success closes it
// and whose failure opens it again. It is not safe for concurrent use.
type Breaker struct {
	policy    BreakerPolicy
	rng       *rand.Rand
	now       func() time.Time
	state     BreakerState
	failures  int
	openUntil time.Time
}

// NewBreaker returns a closed breaker. A nil now uses time.Now; a nil rng
// uses a random seed.
func NewBreaker(policy BreakerPolicy, rng *rand.Rand, now func() time.Time) *Breaker {
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if now == nil {
		now = time.Now
	}
	return &Breaker{policy: policy, rng: rng, now: now, state: BreakerClosed}
}

// Allow returns how long to wait before the next attempt may dial: zero
// while closed or half open, the rest of the cooldown while open. Once the
// cooldown has passed, it moves the breaker to half open.
func (b *Breaker) Allow() time.Duration {
	if b.state != BreakerOpen {
		return 0
	}
	if wait := b.openUntil.Sub(b.now()); wait > 0 {
		return wait
	}
	b.state = BreakerHalfOpen
	return 0
}

// Success records a connection attempt that reached a session, and closes
// the breaker.
func (b *Breaker) Success() {
	b.state = BreakerClosed
	b.failures = 0
}

// Failure records a failed connection attempt. A failed trial, or the
// FailureThreshold-th failure in a row, opens the breaker; the return value
// tells whether this call opened it.
func (b *Breaker) Failure() bool {
	b.failures++
	if b.state == BreakerHalfOpen || (b.state == BreakerClosed && b.failures >= b.policy.FailureThreshold) {
		b.open()
		return true
	}
	return false
}

// State returns the breaker's state.
func (b *Breaker) State() BreakerState {
	return b.state
}

// OpenUntil returns the end of the current cooldown; it is meaningful only
// while the breaker is open.
func (b *Breaker) OpenUntil() time.Time {
	return b.openUntil
}

// Failures returns the number of consecutive failed attempts.
func (b *Breaker) Failures() int {
	return b.failures
}

func (b *Breaker) open() {
	cooldown := b.policy.Cooldown
	jitter := time.Duration(b.rng.Float64() * breakerJitter * float64(cooldown))
	b.state = BreakerOpen
	b.openUntil = b.now().Add(cooldown + jitter)
}
