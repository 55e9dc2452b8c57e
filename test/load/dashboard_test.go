package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSummarizeNearestRank(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name                     string
		latencies                []time.Duration
		median, p99, maximumWant time.Duration
	}{
		{"one call", []time.Duration{7 * ms}, 7 * ms, 7 * ms, 7 * ms},
		{"unsorted four", []time.Duration{4 * ms, 1 * ms, 3 * ms, 2 * ms}, 2 * ms, 4 * ms, 4 * ms},
		// With 200 calls the 99th percentile is the 198th value, so the
		// two largest stalls move only the maximum.
		{"two outliers in 200", append(repeat(ms, 198), 5*time.Second, 13*time.Second), ms, ms, 13 * time.Second},
		// With 100 calls one stall is the maximum and not the p99.
		{"one outlier in 100", append(repeat(2*ms, 99), 9*time.Second), 2 * ms, 2 * ms, 9 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			input := append([]time.Duration(nil), tc.latencies...)
			median, p99, maximum := summarize(input)
			assert.Equal(t, tc.median, median, "median")
			assert.Equal(t, tc.p99, p99, "p99")
			assert.Equal(t, tc.maximumWant, maximum, "max")
			assert.Equal(t, tc.latencies, input, "summarize must not reorder its input")
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestParseOptionsZeroWorkers(t *testing.T) {
	o, err := parseOptions([]string{"-mode", "dashboard", "-workers", "0"})
	require.NoError(t, err, "dashboard mode probes without a fleet")
	assert.Equal(t, 0, o.workers)

	_, err = parseOptions([]string{"-mode", "idle", "-workers", "0"})
	require.Error(t, err, "idle mode rejects -workers 0")
	assert.Contains(t, err.Error(), "-workers 0")

	_, err = parseOptions([]string{"-mode", "dashboard", "-workers", "-1"})
	require.Error(t, err, "negative workers")

	_, err = parseOptions([]string{"-mode", "dashboard", "-probe-interval", "0s"})
	require.Error(t, err, "zero probe interval")
	assert.Contains(t, err.Error(), "-probe-interval")
}
