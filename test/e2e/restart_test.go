package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCoordinatorKilledMidRun(t *testing.T) {
	e := newEnv(t)
	e.startWorker("worker-1", 2)
	e.startWorker("worker-2", 2)
	e.waitConnected("worker-1", "worker-2")

	argvs := make([][]string, 8)
	for i := range argvs {
		argvs[i] = []string{"sh", "-c", "sleep 2; echo done"}
	}
	batch := e.submitCommands(argvs...)

	// Kill the coordinator while tasks run, then start it on the same data.
	e.waitRunning(batch, 2)
	e.coordinator.Kill()
	e.startCoordinator()

	tasks := e.waitTerminal(batch, 2*time.Minute)
	require.Len(t, tasks, len(argvs))
	e.requireExactlyOnce(tasks)
}

func TestNetworkCutMidRun(t *testing.T) {
	e := newEnv(t)
	e.startWorker("worker-1", 2)
	e.waitConnected("worker-1")

	batch := e.submitCommands(
		[]string{"sh", "-c", "sleep 2; echo one"},
		[]string{"sh", "-c", "sleep 2; echo two"},
		[]string{"sh", "-c", "sleep 2; echo three"},
	)
	e.waitRunning(batch, 2)

	// The tasks finish while the link is down; their outcomes wait in the
	// outbox until the worker reconnects.
	e.proxy.Refuse(true)
	e.proxy.Cut()
	e.waitDisconnected("worker-1")
	e.waitOutbox("worker-1", 2)
	e.proxy.Refuse(false)

	tasks := e.waitTerminal(batch, time.Minute)
	e.requireExactlyOnce(tasks)
}
