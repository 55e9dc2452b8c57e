package protocol

import (
	"sync"
	"time"
)

// RTTEstimator smooths round-trip samples the way TCP does (RFC 6298): the
// smoothed RTT moves an eighth of the way to each sample, and the variance
// a quarter of the way to each sample's distance from it. Safe for
// concurrent use.
type RTTEstimator struct {
	mu      sync.Mutex
	srtt    time.Duration
	rttvar  time.Duration
	samples int
}

// Add records one round-trip sample; negative samples are ignored.
func (e *RTTEstimator) Add(sample time.Duration) {
	if sample < 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.samples == 0 {
		e.srtt = sample
		e.rttvar = sample / 2
	} else {
		diff := e.srtt - sample
		if diff < 0 {
			diff = -diff
		}
		e.rttvar = (3*e.rttvar + diff) / 4
		e.srtt = (7*e.srtt + sample) / 8
	}
	e.samples++
}

// Get returns the smoothed RTT, its variance and the sample count.
func (e *RTTEstimator) Get() (srtt, rttvar time.Duration, samples int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srtt, e.rttvar, e.samples
}

// HeartbeatBounds are the configured limits of adaptive heartbeats.
type HeartbeatBounds struct {
	// Interval is the configured interval, used as is on a fast link.
	Interval time.Duration
	// Timeout is the configured timeout on a fast link.
	Timeout time.Duration
	// MaxInterval and MaxTimeout bound the adapted values on a slow link;
	// zero means four times Interval and Timeout.
	MaxInterval time.Duration
	MaxTimeout  time.Duration
}

// AdaptHeartbeat returns the heartbeat interval and timeout for a link with
// the given smoothed RTT and variance. The timeout is the configured one
// plus srtt + 4 rttvar, the bound TCP uses for its retransmission timeout,
// so a slow but live link is not declared dead. The interval keeps the
// configured ratio to the timeout, and both stay between the configured
// values and their maximums.
func AdaptHeartbeat(srtt, rttvar time.Duration, b HeartbeatBounds) (interval, timeout time.Duration) {
	maxInterval := b.MaxInterval
	if maxInterval <= 0 {
		maxInterval = 4 * b.Interval
	}
	maxTimeout := b.MaxTimeout
	if maxTimeout <= 0 {
		maxTimeout = 4 * b.Timeout
	}
	timeout = min(max(b.Timeout+srtt+4*rttvar, b.Timeout), maxTimeout)
	interval = b.Interval
	if b.Timeout > 0 {
		interval = time.Duration(float64(b.Interval) * float64(timeout) / float64(b.Timeout))
	}
	interval = min(max(interval, b.Interval), maxInterval)
	return interval, timeout
}
