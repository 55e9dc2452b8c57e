package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestShutdownRetryHintsFillWindowsEvenly(t *testing.T) {
	for _, tc := range []struct {
		name         string
		n            int
		maxPerSecond int
		burst        int
		spread       time.Duration
	}{
		{"one worker", 1, 500, 1000, shutdownRetrySpread},
		{"500 workers", 500, 500, 1000, shutdownRetrySpread},
		// The burst of 1,000 and 3 s at 500 per second admit 2,500.
		{"2000 workers", 2000, 500, 1000, shutdownRetrySpread},
		// 5,000 workers need (5,000 - 1,000) / 500 = 8 s.
		{"spread grows with the admission limit", 5000, 500, 1000, 8 * time.Second},
		{"no admission limit", 300, 0, 0, shutdownRetrySpread},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hints := shutdownRetryHints(tc.n, tc.maxPerSecond, tc.burst)
			assert.Len(t, hints, tc.n)
			windows := map[time.Duration]int{}
			for _, h := range hints {
				assert.GreaterOrEqual(t, h, shutdownRetryAfter)
				assert.Less(t, h, shutdownRetryAfter+tc.spread)
				windows[h.Truncate(100*time.Millisecond)]++
			}
			perWindow := tc.n * int(100*time.Millisecond) / int(tc.spread)
			for start, count := range windows {
				assert.LessOrEqual(t, count, perWindow+1, "window at %s", start)
			}
		})
	}
	assert.Empty(t, shutdownRetryHints(0, 500, 1000))
}

func TestShutdownRetryHintsAreShuffled(t *testing.T) {
	// Two shuffles of 100 hints agree with probability 1/100!.
	a, b := shutdownRetryHints(100, 500, 1000), shutdownRetryHints(100, 500, 1000)
	assert.NotEqual(t, a, b)
	assert.ElementsMatch(t, a, b)
}
