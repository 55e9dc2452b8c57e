package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// A worker host that stops running while its reconnection plugin runs on
// must not look connected: the plugin notices that the host no longer
// acknowledges its pings and closes its session. When the host
// runs again it restarts the plugin, syncs its state and finishes its
// tasks once.
func TestFrozenHostIsDisconnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker := e.startWorker("worker-1", 2)
	e.waitConnected("worker-1")
	batch := e.submitCommands(
		[]string{"sh", "-c", "sleep 3; echo one"},
		[]string{"sh", "-c", "sleep 3; echo two"},
	)
	e.waitRunning(batch, 2)

	// Stop the host process only; its plugins and tasks keep running.
	host := worker.Pid()
	plugins := cluster.ChildrenOf(host)
	require.NotEmpty(t, plugins, "the worker host has no plugin processes")
	require.NoError(t, syscall.Kill(host, syscall.SIGSTOP))
	resumed := false
	defer func() {
		if !resumed {
			_ = syscall.Kill(host, syscall.SIGCONT)
		}
	}()

	// The plugin pings the host after 5 s without a message and gives up
	// 5 s later; the slack covers a loaded machine.
	e.waitDisconnectedWithin("worker-1", 30*time.Second)
	require.NoError(t, syscall.Kill(host, syscall.SIGCONT))
	resumed = true

	e.waitConnected("worker-1")
	tasks := e.waitTerminal(batch, 2*time.Minute)
	e.requireExactlyOnce(tasks)
	require.Contains(t, worker.Log(), "connector plugin stopped, restarting it")
}
