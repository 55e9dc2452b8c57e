package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/chaos"
	"github.com/dtf-io/dtf/test/cluster"
)

// A 30-second task whose coordinator restarts at second 10, once with
// SIGTERM and once with SIGKILL. The worker keeps the attempt's lease
// across the restart: the task runs as one attempt in one process, and
// the coordinator applies its outcome once.
func TestLeaseAcrossCoordinatorRestart(t *testing.T) {
	t.Parallel()
	restarts := []struct {
		name string
		stop func(e *env)
	}{
		{name: "sigterm", stop: func(e *env) {
			require.NoError(e.t, e.coordinator.Stop(10*time.Second), "graceful stop of the coordinator")
		}},
		{name: "sigkill", stop: func(e *env) { e.coordinator.Kill() }},
	}
	for _, tc := range restarts {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runLeaseRestart(t, tc.stop)
		})
	}
}

func runLeaseRestart(t *testing.T, stop func(e *env)) {
	e := newEnv(t)
	e.startWorker("worker-1", 1)
	e.waitConnected("worker-1")

	// Every start of the task's process appends a line, so the file counts
	// how often the task ran on any worker.
	starts := filepath.Join(e.dir, "starts")
	script := fmt.Sprintf("echo $$ >> %s; sleep 30; echo finished", starts)
	batch := e.submitCommands([]string{"sh", "-c", script})
	tasks, err := e.client.ListTasks(context.Background(), batch, "")
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	id := tasks[0].ID

	// The task's clock starts when its process writes its line. A second,
	// idle worker could take the task if the coordinator handed it out
	// again.
	e.waitLines(starts, 1)
	started := time.Now()
	e.startWorker("worker-2", 1)
	e.waitConnected("worker-2")
	waitUntil(t, started.Add(10*time.Second))
	stop(e)
	e.startCoordinator()

	// Until the task ends, the coordinator must not hand it out again and
	// the worker must not start it again.
	ctx := context.Background()
	var task *api.Task
	err = cluster.Poll(ctx, 2*time.Minute, 200*time.Millisecond, func() (bool, error) {
		got, err := e.client.GetTask(ctx, id)
		if err != nil {
			return false, nil
		}
		if got.Attempt > 1 {
			return false, fmt.Errorf("task %s handed out again as attempt %d while attempt 1 ran: %+v",
				id, got.Attempt, got.Attempts)
		}
		if n := countLines(starts); n > 1 {
			return false, fmt.Errorf("task %s started %d times", id, n)
		}
		task = got
		return api.Terminal(got.State), nil
	})
	require.NoError(t, err, "%s", e.logs())

	require.Equal(t, api.StateSucceeded, task.State)
	require.Len(t, task.Attempts, 1, "attempts: %+v", task.Attempts)
	assert.Equal(t, api.StateSucceeded, task.Attempts[0].State)
	assert.Equal(t, "worker-1", task.Attempts[0].WorkerID)
	require.NotNil(t, task.Outcome)
	assert.Equal(t, 1, task.Outcome.Attempt)
	assert.Contains(t, task.Outcome.Output, "finished")
	assert.Equal(t, 1, countLines(starts), "starts of the task's process")

	// Both coordinator processes append to one log: the outcome was applied
	// once, and no outcome of the task was rejected as stale.
	log := e.coordinator.Log()
	assert.Len(t, logLinesWith(log, "task finished", "task_id="+id+" "), 1,
		"the coordinator applied the task's outcome more or less than once")
	assert.Empty(t, logLinesWith(log, "outcome rejected", "task_id="+id+" "))

	report := e.checkStore(batch)
	assert.Equal(t, 1, report.TasksByState[api.StateSucceeded])
	assert.Equal(t, 1, report.Attempts)
}

// waitLines waits until the file has at least n lines.
func (e *env) waitLines(path string, n int) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		return countLines(path) >= n, nil
	})
	require.NoError(e.t, err, "%s did not reach %d lines\n%s", path, n, e.logs())
}

// countLines returns the number of lines in the file, 0 when it does not
// exist.
func countLines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "\n")
}

// logLinesWith returns the lines of log that contain every part.
func logLinesWith(log string, parts ...string) []string {
	var found []string
	for line := range strings.SplitSeq(log, "\n") {
		all := true
		for _, part := range parts {
			if !strings.Contains(line, part) {
				all = false
				break
			}
		}
		if all {
			found = append(found, line)
		}
	}
	return found
}

// checkStore stops the workers and then the coordinator, so that the store
// is complete and closed, and runs chaos.Check on the batch. Each broken
// invariant fails the test.
func (e *env) checkStore(batch string) *chaos.Report {
	e.t.Helper()
	for id, w := range e.workers {
		if err := w.Stop(20 * time.Second); err != nil {
			e.t.Logf("stop %s: %v", id, err)
		}
	}
	require.NoError(e.t, e.coordinator.Stop(20*time.Second), "stop coordinator")
	path := filepath.Join(e.coordCfg.DataDir, coordinator.StoreFile)
	report, err := chaos.Check(context.Background(), path, batch)
	require.NoError(e.t, err)
	for _, v := range report.Violations {
		e.t.Errorf("invariant broken: %s", v)
	}
	return report
}
