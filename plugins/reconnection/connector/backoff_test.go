package connector

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBackoffCeiling(t *testing.T) {
	doubling := BackoffPolicy{Base: 100 * time.Millisecond, Multiplier: 2, Cap: time.Second}
	cases := []struct {
		name     string
		policy   BackoffPolicy
		failures int
		want     time.Duration
	}{
		{"no failure counts as first", doubling, 0, 100 * time.Millisecond},
		{"first failure is base", doubling, 1, 100 * time.Millisecond},
		{"second doubles", doubling, 2, 200 * time.Millisecond},
		{"fourth", doubling, 4, 800 * time.Millisecond},
		{"fifth reaches cap", doubling, 5, time.Second},
		{"far beyond cap", doubling, 1000, time.Second},
		{"overflow stays at cap", doubling, 1 << 30, time.Second},
		{"multiplier one is constant", BackoffPolicy{Base: time.Second, Multiplier: 1, Cap: time.Minute}, 50, time.Second},
		{"fractional multiplier", BackoffPolicy{Base: time.Second, Multiplier: 1.5, Cap: time.Minute}, 3, 2250 * time.Millisecond},
		{"base equals cap", BackoffPolicy{Base: time.Second, Multiplier: 2, Cap: time.Second}, 1, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.policy.Ceiling(tc.failures))
		})
	}
}

// TestBackoffProperties drives random policies through random sequences of
// failures and resets, and checks three invariants on every step. A delay
// never exceeds its ceiling or the cap. The ceiling never shrinks while
// failures accumulate. A reset starts again from the base.
func TestBackoffProperties(t *testing.T) {
	gen := rand.New(rand.NewPCG(7, 11))
	for run := range 500 {
		base := time.Duration(1+gen.IntN(1000)) * time.Millisecond
		policy := BackoffPolicy{
			Base:       base,
			Multiplier: 1 + gen.Float64()*3,
			Cap:        base + time.Duration(gen.IntN(60_000))*time.Millisecond,
		}
		b := NewBackoff(policy, rand.New(rand.NewPCG(uint64(run), 3)))
		previousCeiling := time.Duration(0)

		for step := range 200 {
			if gen.IntN(20) == 0 {
				b.Reset()
				require.Equal(t, 0, b.Failures())
				previousCeiling = 0
				delay := b.Next()
				require.LessOrEqual(t, delay, policy.Base, "run %d step %d: first delay after reset", run, step)
				previousCeiling = policy.Ceiling(b.Failures())
				continue
			}

			delay := b.Next()
			ceiling := policy.Ceiling(b.Failures())
			require.GreaterOrEqual(t, delay, time.Duration(0))
			require.LessOrEqual(t, delay, ceiling, "run %d step %d: delay above ceiling", run, step)
			require.LessOrEqual(t, ceiling, policy.Cap, "run %d step %d: ceiling above cap", run, step)
			require.GreaterOrEqual(t, ceiling, previousCeiling, "run %d step %d: ceiling shrank while unhealthy",
				run, step)
			previousCeiling = ceiling
		}
	}
}

func TestBackoffJitterSpreadsDelays(t *testing.T) {
	policy := BackoffPolicy{Base: 10 * time.Millisecond, Multiplier: 2, Cap: time.Second}
	b := NewBackoff(policy, rand.New(rand.NewPCG(1, 1)))
	for range 20 {
		b.Next()
	}

	// At the cap, full jitter draws from the whole of [0, cap], so workers
	// that failed together do not retry together.
	lowest, highest := policy.Cap, time.Duration(0)
	distinct := make(map[time.Duration]bool)
	for range 1000 {
		delay := b.Next()
		lowest = min(lowest, delay)
		highest = max(highest, delay)
		distinct[delay] = true
	}
	assert.Less(t, lowest, policy.Cap/10)
	assert.Greater(t, highest, policy.Cap*9/10)
	assert.Greater(t, len(distinct), 900)
}

func TestBackoffResetRestartsCount(t *testing.T) {
	b := NewBackoff(BackoffPolicy{Base: time.Millisecond, Multiplier: 2, Cap: time.Second}, nil)
	for range 5 {
		b.Next()
	}
	assert.Equal(t, 5, b.Failures())
	b.Reset()
	assert.Equal(t, 0, b.Failures())
	assert.LessOrEqual(t, b.Next(), time.Millisecond)
	assert.Equal(t, 1, b.Failures())
}
