package connector

import (
	"time"

	"github.com/dtf-io/dtf/protocol"
)

// minAnnouncedInterval is the shortest heartbeat interval the plugin
// takes from a Welcome. It is below the 50ms that configs allow, so that it
// only guards against a coordinator built in code or a broken one.
const minAnnouncedInterval = 10 * time.Millisecond

// heartbeatBounds returns the limits of adaptive heartbeats for a session.
// announcedInterval and announcedTimeout come from Welcome, zero when it
// gave none. A shorter announced interval replaces the configured one,
// because the coordinator expects a frame at least that often. The adapted
// interval stays below half the coordinator's timeout, so that growing it
// on a slow link never makes the coordinator declare the worker dead.
//
// An announced interval below minAnnouncedInterval counts as that minimum,
// so that a coordinator that announces a tiny interval cannot make the
// plugin spin.
func heartbeatBounds(cfg *Config, announcedInterval, announcedTimeout time.Duration) protocol.HeartbeatBounds {
	if announcedInterval > 0 {
		announcedInterval = max(announcedInterval, minAnnouncedInterval)
	}
	bounds := protocol.HeartbeatBounds{
		Interval:    cfg.HeartbeatInterval,
		Timeout:     cfg.HeartbeatTimeout,
		MaxInterval: cfg.MaxHeartbeatInterval,
		MaxTimeout:  cfg.MaxHeartbeatTimeout,
	}
	if announcedInterval > 0 && announcedInterval < bounds.Interval {
		bounds.Interval = announcedInterval
	}
	if announcedTimeout > 0 {
		bounds.MaxInterval = min(bounds.MaxInterval, announcedTimeout/2)
	}
	bounds.MaxInterval = max(bounds.MaxInterval, bounds.Interval)
	return bounds
}

// adaptHeartbeat recomputes the heartbeat interval and read timeout from
// the round-trip samples so far.
func (s *session) adaptHeartbeat() {
	srtt, rttvar, samples := s.rtt.Get()
	if samples == 0 {
		return
	}
	interval, timeout := protocol.AdaptHeartbeat(srtt, rttvar, s.bounds)
	s.interval.Store(int64(interval))
	s.timeout.Store(int64(timeout))
}

// heartbeat returns the heartbeat interval and read timeout in force.
func (s *session) heartbeat() (interval, timeout time.Duration) {
	return time.Duration(s.interval.Load()), time.Duration(s.timeout.Load())
}
