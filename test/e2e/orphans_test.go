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
