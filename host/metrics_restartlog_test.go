package host

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/internal/ratelog"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
)

// After a metrics plugin's restart succeeds, no held-back "restart failed"
// line of the same outage is logged, so the log never ends with a failure
// for a plugin that runs.
func TestMetricsRestartFailedNotLoggedAfterRestart(t *testing.T) {
	const logInterval = 500 * time.Millisecond
	cfg := metricsConfig(t, "m")
	fastRestart(cfg)
	var failing atomic.Bool
	var failed atomic.Int32
	failLaunches := func(h *Host) {
		h.metrics.logs = ratelog.New(logInterval)
		fake := h.launch
		h.launch = func(ctx context.Context, lc dtfplugin.LaunchConfig) (pluginProcess, error) {
			if lc.Kind == dtfplugin.KindMetrics && failing.Load() {
				failed.Add(1)
				return nil, errors.New("start plugin m: exited before it reported its address")
			}
			return fake(ctx, lc)
		}
	}
	hs, _ := startMetricsHost(t, cfg, map[string]pb.MetricsServer{"m": newFakeMetrics(0)}, failLaunches)

	failing.Store(true)
	hs.plugins.processes("m")[0].Kill()
	// Three failures within logInterval: the limiter logs the first and
	// holds the others back.
	require.Eventually(t, func() bool { return failed.Load() >= 3 }, waitFor, time.Millisecond,
		"the host did not retry the launch")
	failing.Store(false)
	require.Eventually(t, func() bool { return strings.Contains(hs.logs.String(), "metrics plugin restarted") },
		waitFor, 10*time.Millisecond, "the plugin was not restarted")

	// Once the limiter's interval has passed, Flush logs what it held back,
	// as the delivery loop does every 30 s.
	restarted := time.Now()
	require.Eventually(t, func() bool { return time.Since(restarted) > logInterval },
		waitFor, 10*time.Millisecond)
	hs.host.metrics.logs.Flush()

	logs := hs.logs.String()
	after := logs[strings.LastIndex(logs, "metrics plugin restarted"):]
	assert.NotContains(t, after, "restart failed", "a failure was logged after the restart")
	assert.Contains(t, after, "failed_attempts=")
}
