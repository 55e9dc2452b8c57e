package main

import (
	"math/rand/v2"
	"time"
)

// backoff draws reconnection delays the way the reconnection plugin does:
// exponential growth from base by multiplier per consecutive failure, capped
// at cap, with full jitter (a delay uniform in [0, ceiling]). It is owned by
// one simulated worker and not safe for concurrent use.
type backoff struct {
	base       time.Duration
	multiplier float64
	maxDelay   time.Duration
	failures   int
	rng        *rand.Rand
}

func newBackoff(base, maxDelay time.Duration, multiplier float64) *backoff {
	return &backoff{
		base:       base,
		multiplier: multiplier,
		maxDelay:   maxDelay,
		rng:        rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// next records one more failure and returns the delay before the next dial.
func (b *backoff) next() time.Duration {
	b.failures++
	ceiling := float64(b.base)
	for i := 1; i < b.failures && ceiling < float64(b.maxDelay); i++ {
		ceiling *= b.multiplier
	}
	ceiling = min(ceiling, float64(b.maxDelay))
	return time.Duration(b.rng.Int64N(int64(ceiling) + 1))
}

// reset clears the failure count. A worker calls it once a session has
// stayed up for the healthy period.
func (b *backoff) reset() {
	b.failures = 0
}
