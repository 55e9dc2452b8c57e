package connector

import (
	"sync"
	"time"
)

// rttEstimator smooths round-trip time samples with exponential moving
// averages. The smoothed RTT moves 1/8 of the way to each sample, and the
// variance 1/4 of the way to each sample's deviation from it, the gains
// that TCP's retransmission timer uses. It is safe for concurrent use.
type rttEstimator struct {
	mu       sync.Mutex
	smoothed time.Duration
	variance time.Duration
	samples  uint64
}

// observe adds one sample; samples of zero or less are ignored.
func (e *rttEstimator) observe(sample time.Duration) {
	if sample <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.samples == 0 {
		e.smoothed = sample
		e.variance = sample / 2
	} else {
		deviation := e.smoothed - sample
		if deviation < 0 {
			deviation = -deviation
		}
		e.variance = (3*e.variance + deviation) / 4
		e.smoothed = (7*e.smoothed + sample) / 8
	}
	e.samples++
}

// get returns the smoothed RTT, its variance and the number of samples.
func (e *rttEstimator) get() (smoothed, variance time.Duration, samples uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.smoothed, e.variance, e.samples
}
