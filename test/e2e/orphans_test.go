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
	"github.com/dtf-io/dtf/test/cluster"
)

// A SIGKILLed executor plugin leaves its task's processes behind. The
// worker host, a child subreaper, inherits them, kills them and reaps
// them, and the retried attempt runs alone.
func TestExecutorKilledLeavesNoTaskProcesses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker := e.startSupervisedWorker("worker-1", 1, nil)
	e.waitConnected("worker-1")

	// The first attempt sleeps long; the retry finds the flag and exits.
	// The sleep's unique argument marks both the shell and its child.
	marker := fmt.Sprintf("60.%06d", time.Now().UnixNano()%1000000)
	flag := filepath.Join(e.dir, "flag")
	script := fmt.Sprintf("if [ -e %s ]; then exit 0; fi; touch %s; sleep %s", flag, flag, marker)
	batch := e.submitCommand(3, "sh", "-c", script)
	e.waitRunning(batch, 1)
	err := cluster.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(processesWith(marker)) > 0, nil
	})
	require.NoError(t, err, "task process did not start\n%s", e.logs())

	executor := e.waitPlugin(worker, "dtf-exec-command", 0)
	require.NoError(t, syscall.Kill(executor, syscall.SIGKILL))
	err = cluster.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(processesWith(marker)) == 0, nil
	})
	require.NoError(t, err, "task processes %v outlived their executor plugin\n%s",
		processesWith(marker), e.logs())

	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 1)
	task := tasks[0]
	require.Equal(t, api.StateSucceeded, task.State, "attempts: %+v", task.Attempts)
	require.Len(t, task.Attempts, 2, "the crashed attempt is retried once")
	assert.Equal(t, api.StateFailed, task.Attempts[0].State)
	assert.Equal(t, api.StateSucceeded, task.Attempts[1].State)
	require.NotNil(t, task.Outcome)
	assert.Equal(t, 2, task.Outcome.Attempt, "the outcome is the retried attempt's")
	assert.Contains(t, worker.Log(), "killed orphaned task processes")
}

// Cancelling a task through the API reaches its executor and kills every
// process the task started, one that left the task's process group with
// setsid included, while the worker and its executor keep running.
func TestCancelKillsWholeProcessTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startWorker("worker-1", 1)
	e.waitConnected("worker-1")

	// Unique sleep arguments mark the task's own process and the one that
	// escapes its group.
	stamp := time.Now().UnixNano() % 1000000
	inGroup := fmt.Sprintf("61.%06d", stamp)
	escaped := fmt.Sprintf("62.%06d", stamp)
	script := fmt.Sprintf("setsid sleep %s & sleep %s", escaped, inGroup)
	batch := e.submitCommands([]string{"sh", "-c", script})
	e.waitRunning(batch, 1)
	err := cluster.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(processesWith(inGroup)) > 0 && len(processesWith(escaped)) > 0, nil
	})
	require.NoError(t, err, "task processes did not start\n%s", e.logs())

	tasks, err := e.client.ListTasks(context.Background(), batch, "")
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	_, err = e.client.Cancel(context.Background(), tasks[0].ID)
	require.NoError(t, err)

	done := e.waitTerminal(batch, time.Minute)
	require.Len(t, done, 1)
	assert.Equal(t, api.StateCancelled, done[0].State)
	err = cluster.Poll(context.Background(), 15*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(processesWith(inGroup)) == 0 && len(processesWith(escaped)) == 0, nil
	})
	require.NoError(t, err, "processes %v and %v outlived the cancelled task\n%s",
		processesWith(inGroup), processesWith(escaped), e.logs())
	assert.NotContains(t, e.workers["worker-1"].Log(), "killed orphaned task processes",
		"the executor, not the host, ends the task's processes")
}
