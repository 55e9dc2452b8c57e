package connector

import (
	"math"
	"math/rand/v2"
	"time"
)

// BackoffPolicy is the exponential backoff between reconnection attempts.
type BackoffPolicy struct {
	// Base is the ceiling of the first delay.
	Base time.Duration
	// Multiplier grows the ceiling after each consecutive failure.
	Multiplier float64
	// Cap bounds the ceiling, so a long outage is retried at least every Cap.
	Cap time.Duration
}

// Ceiling returns the upper bound of the delay after failures consecutive
// failures, counted from 1: Base * Multiplier^(failures-1), capped at Cap.
func (p BackoffPolicy) Ceiling(failures int) time.Duration {
	if failures < 1 {
		failures = 1
	}
	// Compute in float64 and compare before converting, because
	// Multiplier^n overflows time.Duration after a few dozen failures.
	ceiling := float64(p.Base) * math.Pow(p.Multiplier, float64(failures-1))
	if ceiling >= float64(p.Cap) || math.IsInf(ceiling, 0) || math.IsNaN(ceiling) {
		return p.Cap
	}
	return time.Duration(ceiling)
}

// Backoff tracks consecutive connection failures and draws the delay before
// the next attempt. It applies full jitter after the cap: the delay is
// uniform in [0, Ceiling], so a fleet of workers that lost the coordinator
// at the same moment spreads its reconnections instead of settling into the
// same delay. It is not safe for concurrent use.
type Backoff struct {
	policy   BackoffPolicy
	rng      *rand.Rand
	failures int
}

// NewBackoff returns a Backoff with no failures. A nil rng uses a random
// seed; tests pass a seeded one.
func NewBackoff(policy BackoffPolicy, rng *rand.Rand) *Backoff {
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Backoff{policy: policy, rng: rng}
}

// Next records one more failure and returns the delay before the next
// attempt.
func (b *Backoff) Next() time.Duration {
	if b.failures < math.MaxInt32 {
		b.failures++
	}
	ceiling := b.policy.Ceiling(b.failures)
	return time.Duration(b.rng.Int64N(int64(ceiling) + 1))
}

// Reset sets the failure count to zero. The connector calls it once a
// connection has stayed up for HealthyAfter.
func (b *Backoff) Reset() {
	b.failures = 0
}

// Failures returns the number of consecutive failures recorded.
func (b *Backoff) Failures() int {
	return b.failures
}
