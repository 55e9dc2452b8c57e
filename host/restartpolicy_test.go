package host

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/host/config"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// setRestart sets the restart policy of the plugin named name.
func setRestart(cfg *config.Config, name string, policy config.RestartPolicy) {
	for i := range cfg.Plugins {
		if cfg.Plugins[i].Name == name {
			cfg.Plugins[i].Restart = policy
		}
	}
}

func TestExecutorRestartNeverStaysDown(t *testing.T) {
	cfg := testConfig(t, "runner")
	fastRestart(cfg)
	setRestart(cfg, "runner", config.RestartPolicy{Policy: config.RestartNever})
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"echo"}})

	hs.plugins.processes("runner")[0].Kill()
	require.Eventually(t, func() bool {
		return hs.host.executors[0].downMessage() != ""
	}, waitFor, 10*time.Millisecond)

	// The task fails at once instead of waiting executorUpWait for a
	// restart that never comes.
	start := time.Now()
	c.frame(t, assignFrame("t1", 1, "echo"))
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Less(t, time.Since(start), defaultExecutorUpWait/2)
	assert.Equal(t, wirepb.Status_STATUS_FAILED, outcome.GetStatus())
	assert.True(t, outcome.GetRetryable())
	assert.Contains(t, outcome.GetMessage(), "stays down, because its restart policy is never")

	assert.Contains(t, hs.logs.String(), "executor plugin crashed and stays down")
	assert.NotContains(t, hs.logs.String(), "executor plugin restarted")
	assert.Len(t, hs.plugins.processes("runner"), 1, "no second process")
}

func TestConnectorRestartNeverStopsWorker(t *testing.T) {
	cfg := testConfig(t, "runner")
	fastRestart(cfg)
	setRestart(cfg, "reconnection", config.RestartPolicy{Policy: config.RestartNever})
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"echo"}})

	close(c.crash)
	select {
	case err := <-hs.done:
		hs.done <- err
		require.Error(t, err)
		assert.Contains(t, err.Error(), "connector plugin reconnection stopped")
		assert.Contains(t, err.Error(), "restart policy is never")
	case <-time.After(waitFor):
		t.Fatal("host did not stop after the connector crashed")
	}
	assert.True(t, hs.plugins.allKilled())
}

func TestPluginBackoffOverridesTopLevel(t *testing.T) {
	cfg := testConfig(t, "runner")
	h, err := New(cfg, nil)
	require.NoError(t, err)

	own := h.newPluginBackoff(config.Plugin{Restart: config.RestartPolicy{
		BackoffBase: 2 * time.Second, BackoffCap: 3 * time.Second}})
	assert.Equal(t, 2*time.Second, own.base)
	assert.Equal(t, 3*time.Second, own.limit)

	top := h.newPluginBackoff(config.Plugin{})
	assert.Equal(t, config.DefaultRestartBackoffBase, top.base)
	assert.Equal(t, config.DefaultRestartBackoffCap, top.limit)

	// A base above the top-level cap raises the cap to the base.
	high := h.newPluginBackoff(config.Plugin{Restart: config.RestartPolicy{BackoffBase: time.Minute}})
	assert.Equal(t, time.Minute, high.limit)
}

var _ sdk.Executor = (*testExecutor)(nil)
