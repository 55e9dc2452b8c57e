package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
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

	// Each task marks its start in a file, because the coordinator lists
	// a task as running when it sends the assignment, before the worker
	// has received it, and the cut must not take an assignment with it.
	started := func(name string) string { return filepath.Join(e.dir, "started-"+name) }
	batch := e.submitCommands(
		[]string{"sh", "-c", "touch " + started("one") + "; sleep 2; echo one"},
		[]string{"sh", "-c", "touch " + started("two") + "; sleep 2; echo two"},
		[]string{"sh", "-c", "touch " + started("three") + "; sleep 2; echo three"},
	)
	e.waitRunning(batch, 2)
	err := cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		count := 0
		for _, name := range []string{"one", "two", "three"} {
			if _, err := os.Stat(started(name)); err == nil {
				count++
			}
		}
		return count >= 2, nil
	})
	require.NoError(t, err, "two tasks did not start on the worker\n%s", e.logs())

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
