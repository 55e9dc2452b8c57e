package connector

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestHeartbeatBoundsFollowAShorterAnnouncedInterval(t *testing.T) {
	cfg := &Config{HeartbeatInterval: 2 * time.Second, HeartbeatTimeout: 6 * time.Second,
		MaxHeartbeatInterval: 10 * time.Second, MaxHeartbeatTimeout: 30 * time.Second}

	bounds := heartbeatBounds(cfg, 500*time.Millisecond, 3*time.Second)
	assert.Equal(t, 500*time.Millisecond, bounds.Interval, "the coordinator expects a frame that often")
	assert.Equal(t, 1500*time.Millisecond, bounds.MaxInterval, "half the coordinator's timeout")

	bounds = heartbeatBounds(cfg, time.Nanosecond, 3*time.Second)
	assert.Equal(t, minAnnouncedInterval, bounds.Interval, "a tiny announced interval is raised")

	bounds = heartbeatBounds(cfg, 0, 0)
	assert.Equal(t, 2*time.Second, bounds.Interval, "without an announcement the config applies")
}
