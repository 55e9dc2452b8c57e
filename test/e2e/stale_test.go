package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/test/cluster"
)

// A worker host and its plugins frozen with SIGSTOP past reassign_after
// lose their attempts, and a second worker runs the tasks. When the frozen
// worker runs again, the outcome of the task that finished while it was
// frozen is rejected as stale, and the task it still runs is cancelled
// with its process tree.
func TestFrozenWorkerOutcomeRejectedAsStale(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *cluster.CoordinatorConfig) {
		c.ReassignAfter = 3 * time.Second
	})
	frozen := e.startWorker("worker-1", 2)
	e.waitConnected("worker-1")

	// The short task's first run ends while its worker is frozen. The long
	// task's first run sleeps long under a unique argument, so that its
	// processes can be found. A later run finds the flag and ends soon.
	marker := fmt.Sprintf("60.%06d", time.Now().UnixNano()%1000000)
	shortStarts := filepath.Join(e.dir, "short.starts")
	longStarts := filepath.Join(e.dir, "long.starts")
	flag := filepath.Join(e.dir, "long.flag")
	batch := e.submitCommands(
		[]string{"sh", "-c", fmt.Sprintf("echo $$ >> %s; sleep 4; echo short done", shortStarts)},
		[]string{"sh", "-c", fmt.Sprintf("echo $$ >> %s; if [ -e %s ]; then sleep 1; echo long done; "+
			"else touch %s; sleep %s; fi", longStarts, flag, flag, marker)},
	)
	shortID, longID := e.taskIDs(batch)
	e.waitLines(shortStarts, 1)
	e.waitLines(longStarts, 1)

	// Freeze the host and its plugins, but not the task processes, which
	// belong to the command plugin.
	pids := append([]int{frozen.Pid()}, cluster.ChildrenOf(frozen.Pid())...)
	require.Len(t, pids, 4, "the worker runs its host, the reconnection, command and gotest plugins")
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	}
	resumed := false
	resume := func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		resumed = true
	}
	t.Cleanup(func() {
		if !resumed {
			resume()
		}
	})

	// The coordinator notices the silence within the heartbeat timeout,
	// waits reassign_after and hands both tasks to the second worker.
	e.startWorker("worker-2", 2)
	e.waitConnected("worker-2")
	e.waitAttemptOn(shortID, 2, "worker-2")
	e.waitAttemptOn(longID, 2, "worker-2")
	require.NotEmpty(t, processesWith(marker), "the long task's first run ended while its worker was frozen")

	resume()
	e.waitConnected("worker-1")

	// The late outcomes of attempt 1 reach the coordinator, which rejects
	// them, and the worker logs that they were not applied. The short
	// task's result is stale. The long task's outcome reports the cancel
	// that the coordinator sent for the lost attempt, which is expected
	// and not counted as stale.
	e.waitLog(e.coordinator, "outcome rejected", "task_id="+shortID+" ", "attempt=1 ", "stale attempt 1")
	e.waitLog(e.coordinator, "worker confirmed the cancel of an attempt the coordinator had ended as lost",
		"task_id="+longID+" ", "attempt=1 ", "stale attempt 1")
	for _, id := range []string{shortID, longID} {
		e.waitLog(frozen, "outcome acknowledged but not applied", "task_id="+id+" ", "attempt=1 ")
	}

	// The woken worker cancels its copy of the long task and kills its
	// process.
	e.waitLog(frozen, "cancelling task", "task_id="+longID+" ", "attempt=1 ")
	err := cluster.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(processesWith(marker)) == 0, nil
	})
	require.NoError(t, err, "the long task's first run still runs on the woken worker: %v\n%s",
		processesWith(marker), e.logs())

	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 2)
	e.requireExactlyOnce(tasks)
	for _, task := range tasks {
		require.Len(t, task.Attempts, 2, "task %s attempts: %+v", task.ID, task.Attempts)
		assert.Equal(t, store.AttemptLost, task.Attempts[0].State, "task %s attempt 1", task.ID)
		assert.Equal(t, "worker-1", task.Attempts[0].WorkerID, "task %s attempt 1", task.ID)
		assert.Equal(t, api.StateSucceeded, task.Attempts[1].State, "task %s attempt 2", task.ID)
		assert.Equal(t, "worker-2", task.Outcome.WorkerID, "task %s outcome", task.ID)
		assert.Equal(t, 2, task.Outcome.Attempt, "task %s outcome", task.ID)
	}
	assert.Equal(t, 2, countLines(shortStarts), "runs of the short task")
	assert.Equal(t, 2, countLines(longStarts), "runs of the long task")

	report := e.checkStore(batch)
	assert.Equal(t, 2, report.TasksByState[api.StateSucceeded])
}

// taskIDs returns the ids of a batch of two tasks in submission order.
func (e *env) taskIDs(batch string) (first, second string) {
	e.t.Helper()
	tasks, err := e.client.ListTasks(context.Background(), batch, "")
	require.NoError(e.t, err)
	require.Len(e.t, tasks, 2)
	byName := map[string]string{}
	for _, task := range tasks {
		byName[task.Name] = task.ID
	}
	return byName["task-0"], byName["task-1"]
}

// waitAttemptOn waits until the task runs the given attempt on the worker.
func (e *env) waitAttemptOn(id string, attempt int, workerID string) {
	e.t.Helper()
	ctx := context.Background()
	err := cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		task, err := e.client.GetTask(ctx, id)
		if err != nil {
			return false, nil
		}
		return task.Attempt == attempt && task.State == api.StateRunning && task.WorkerID == workerID, nil
	})
	require.NoError(e.t, err, "task %s did not run attempt %d on %s\n%s", id, attempt, workerID, e.logs())
}

// waitLog waits until the process's log has a line that contains every
// part.
func (e *env) waitLog(p *cluster.Process, parts ...string) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		return len(logLinesWith(p.Log(), parts...)) > 0, nil
	})
	require.NoError(e.t, err, "no line with %q in the log of %s\n%s", parts, p.Name, e.logs())
}
