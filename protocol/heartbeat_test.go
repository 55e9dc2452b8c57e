package protocol

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestRTTEstimatorSmooths(t *testing.T) {
	var e RTTEstimator
	e.Add(100 * time.Millisecond)
	srtt, rttvar, n := e.Get()
	assert.Equal(t, 100*time.Millisecond, srtt)
	assert.Equal(t, 50*time.Millisecond, rttvar)
	assert.Equal(t, 1, n)

	e.Add(200 * time.Millisecond)
	srtt, rttvar, _ = e.Get()
	assert.Equal(t, 112500*time.Microsecond, srtt)
	assert.Equal(t, 62500*time.Microsecond, rttvar)

	e.Add(-time.Second)
	_, _, n = e.Get()
	assert.Equal(t, 2, n, "negative samples are ignored")
}

func TestAdaptHeartbeat(t *testing.T) {
	bounds := HeartbeatBounds{Interval: 2 * time.Second, Timeout: 6 * time.Second}
	cases := []struct {
		name             string
		srtt, rttvar     time.Duration
		interval, timout time.Duration
	}{
		{"fast link keeps configured values", 0, 0, 2 * time.Second, 6 * time.Second},
		{"slow link grows both", 2 * time.Second, 500 * time.Millisecond, 10 * time.Second / 3, 10 * time.Second},
		{"capped at four times", time.Minute, time.Minute, 8 * time.Second, 24 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			interval, timeout := AdaptHeartbeat(c.srtt, c.rttvar, bounds)
			assert.Equal(t, c.interval, interval)
			assert.Equal(t, c.timout, timeout)
		})
	}
}
