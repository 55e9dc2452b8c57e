//go:build linux

package host

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/test/cluster"
)

// stoppedPluginWait bounds the replacement of a stopped metrics plugin: a
// Record call (2 s), the Info probe (2 s), the wait for an exit (1 s), the
// restart backoff and the launch of the new process.
const stoppedPluginWait = 30 * time.Second

// launchRealMetrics makes the host launch its metrics plugins from their
// binaries through go-plugin, and its other plugins as fakes.
func launchRealMetrics(h *Host) {
	fake := h.launch
	h.launch = func(ctx context.Context, cfg dtfplugin.LaunchConfig) (pluginProcess, error) {
		if cfg.Kind == dtfplugin.KindMetrics {
			return launchPlugin(ctx, cfg)
		}
		return fake(ctx, cfg)
	}
}

// A metrics plugin process that is stopped with SIGSTOP answers no call.
// The host kills it after its Info probe times out and launches a new one.
func TestMetricsStoppedPluginReplaced(t *testing.T) {
	repo, err := cluster.RepoRoot()
	require.NoError(t, err)
	binary := filepath.Join(t.TempDir(), "dtf-metrics")
	build := exec.Command("go", "build", "-o", binary, "./plugins/metrics")
	build.Dir = repo
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	addr, err := cluster.FreeAddr()
	require.NoError(t, err)

	cfg := metricsConfig(t, "metrics")
	fastRestart(cfg)
	plugin := &cfg.Plugins[len(cfg.Plugins)-1]
	plugin.Path = binary
	plugin.StartTimeout = 20 * time.Second
	plugin.ConfigJSON = []byte(fmt.Sprintf(`{"listen":%q}`, addr))

	hs, c := startMetricsHost(t, cfg, nil, launchRealMetrics)
	m := hs.host.metrics.plugins[0]
	stopped := m.current()
	require.NotNil(t, stopped)
	pid := stopped.Pid()
	require.Positive(t, pid)
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	// Without the fix the host never ends the stopped process, so the
	// cleanup ends it to let the host stop.
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGCONT)
	})

	// Events make the delivery goroutine call Record, which times out and
	// makes the supervisor probe the process.
	c.stats(1)
	var replaced pluginProcess
	require.Eventually(t, func() bool {
		replaced = m.current()
		return replaced != nil && replaced.Pid() != pid
	}, stoppedPluginWait, 50*time.Millisecond, "the stopped metrics plugin (pid %d) was not replaced\n%s",
		pid, hs.logs.String())

	assert.True(t, stopped.Exited(), "the stopped process still runs")
	assert.Equal(t, "signal: killed", stopped.ExitStatus())
	assert.Contains(t, hs.logs.String(), "metrics plugin restarted")
}
