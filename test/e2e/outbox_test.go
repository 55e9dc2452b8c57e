package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// A task finishes while its worker is cut off from the coordinator, so its
// outcome exists only in the host's outbox. The host is then killed with
// SIGKILL and restarted on the same data_dir once the link is back. The
// restarted host delivers the outcome from disk: the task ends succeeded
// with the outcome of its first and only attempt, and its command ran once.
//
// A host that kept the outcome only in memory, or in the reconnection
// plugin's replay buffer, would lose it with the kill. The restarted host
// would then report neither a running task nor a held outcome, the
// coordinator would retry the task, and the second run would add a line to
// the runs file and a second attempt.
func TestOutboxSurvivesHostKill(t *testing.T) {
	t.Parallel()
	// The worker is away for several seconds. A long reassign_after keeps
	// the attempt current meanwhile, so that its outcome is not stale.
	e := newEnvWith(t, func(c *cluster.CoordinatorConfig) { c.ReassignAfter = 2 * time.Minute })
	const id = "worker-1"
	worker := e.startWorker(id, 1)
	e.waitConnected(id)

	// Each run of the task appends a line to runs and then waits for the
	// gate file, for at most 1200 polls of 50 ms (one minute).
	runs := filepath.Join(e.dir, "runs")
	gate := filepath.Join(e.dir, "gate")
	script := fmt.Sprintf("echo $$ >> %q; n=0; while [ ! -e %q ] && [ $n -lt 1200 ]; do sleep 0.05; "+
		"n=$((n+1)); done; echo finished", runs, gate)
	batch := e.submitCommands([]string{"sh", "-c", script})
	e.waitLines(runs, 1)
	taskID := outboxTaskID(e, batch)

	// Cut the link and keep it down, then let the task finish. Its outcome
	// goes to the outbox and cannot reach the coordinator.
	e.proxy.Refuse(true)
	e.proxy.Cut()
	e.waitDisconnected(id)
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	e.waitOutbox(id, 1)
	heldFile := filepath.Join(e.dir, id, "outbox", taskID+"-1.json")
	require.FileExists(t, heldFile, "the outbox holds the outcome of attempt 1 under <task>-<attempt>.json")

	task, err := e.client.GetTask(context.Background(), taskID)
	require.NoError(t, err)
	require.Equal(t, api.StateRunning, task.State, "the outcome reached the coordinator during the cut")
	require.Nil(t, task.Outcome)

	// SIGKILL the host while the outcome waits on disk. Its plugins exit
	// with it, so the reconnection plugin's copy of the outcome is gone too.
	plugins := cluster.ChildrenOf(worker.Pid())
	require.NotEmpty(t, plugins, "the worker runs its plugins as child processes")
	worker.Kill()
	err = cluster.Poll(context.Background(), 5*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(cluster.Alive(plugins)) == 0, nil
	})
	require.NoError(t, err, "plugins left behind by the killed host: %v", cluster.Alive(plugins))
	require.FileExists(t, heldFile, "the killed host left its outcome in the outbox")

	// Heal the link, then restart the host on the same data_dir.
	e.proxy.Refuse(false)
	restarted := e.startWorker(id, 1)
	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 1)
	e.requireExactlyOnce(tasks)
	done := tasks[0]
	require.Len(t, done.Attempts, 1, "the task was handed out again: %+v", done.Attempts)
	assert.Equal(t, id, done.Attempts[0].WorkerID)
	assert.Equal(t, 1, done.Outcome.Attempt)
	assert.Contains(t, done.Outcome.Output, "finished")
	assert.Equal(t, 1, countLines(runs), "runs of the task's command")

	longcutWaitOutboxEmpty(e, id)
	assert.Contains(t, restarted.Log(), "loaded held outcomes from outbox")
	assert.Empty(t, logLinesWith(e.coordinator.Log(), "outcome rejected", "task_id="+taskID+" "))

	report := e.checkStore(batch)
	assert.Equal(t, 1, report.TasksByState[api.StateSucceeded])
	assert.Equal(t, 1, report.Attempts)
}

// outboxTaskID returns the id of the only task of batch.
func outboxTaskID(e *env, batch string) string {
	e.t.Helper()
	tasks, err := e.client.ListTasks(context.Background(), batch, "")
	require.NoError(e.t, err)
	require.Len(e.t, tasks, 1)
	return tasks[0].ID
}
