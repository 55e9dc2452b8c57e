package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// startSupervisedWorker starts a worker whose config also sets the given
// top-level attributes, such as drain_timeout, as HCL expressions. Crashed
// plugins restart within a few hundred milliseconds.
func (e *env) startSupervisedWorker(id string, slots int, top map[string]string) *cluster.Process {
	e.t.Helper()
	attributes := map[string]string{
		"restart_backoff_base": `"50ms"`,
		"restart_backoff_cap":  `"500ms"`,
	}
	for key, value := range top {
		attributes[key] = value
	}
	config := filepath.Join(e.dir, id+".hcl")
	require.NoError(e.t, cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
		Bin:               bin,
		URL:               "ws://" + e.proxy.Addr(),
		WorkerID:          id,
		Token:             token,
		DataDir:           filepath.Join(e.dir, id),
		Slots:             slots,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BackoffBase:       100 * time.Millisecond,
		BackoffCap:        time.Second,
		HealthyAfter:      3 * time.Second,
		Top:               attributes,
	}))
	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"),
		bin.Path("dtf"), []string{"worker", "-config", config})
	require.NoError(e.t, err)
	e.workers[id] = p
	return p
}

// submitCommand submits one command task with maxAttempts (0 for the
// coordinator's default) and returns its batch.
func (e *env) submitCommand(maxAttempts int, argv ...string) string {
	e.t.Helper()
	payload, err := json.Marshal(map[string]any{"argv": argv})
	require.NoError(e.t, err)
	resp, err := e.client.Submit(context.Background(), api.SubmitRequest{Tasks: []api.TaskSpec{{
		Name: "supervised", Type: "command", Payload: payload, Timeout: "2m", MaxAttempts: maxAttempts,
	}}})
	require.NoError(e.t, err)
	return resp.Batch
}

// waitPlugin waits until the worker runs a plugin binary named name whose
// pid is not old, and returns its pid.
func (e *env) waitPlugin(worker *cluster.Process, name string, old int) int {
	e.t.Helper()
	pid := 0
	err := cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		pid = cluster.ChildNamed(worker.Pid(), name)
		return pid != 0 && pid != old, nil
	})
	require.NoError(e.t, err, "worker %s runs no new %s plugin\n%s", worker.Name, name, e.logs())
	return pid
}

// workerState returns the coordinator's state of a worker, or "" if it does
// not list it.
func (e *env) workerState(id string) string {
	e.t.Helper()
	workers, err := e.client.ListWorkers(context.Background())
	require.NoError(e.t, err)
	for _, w := range workers {
		if w.ID == id {
			return w.State
		}
	}
	return ""
}

// attemptStates returns the state of each attempt of a task, in order.
func attemptStates(task api.Task) []string {
	states := make([]string, 0, len(task.Attempts))
	for _, attempt := range task.Attempts {
		states = append(states, attempt.State)
	}
	return states
}

func TestExecutorPluginKilledMidTask(t *testing.T) {
	e := newEnv(t)
	worker := e.startSupervisedWorker("worker-1", 1, nil)
	e.waitConnected("worker-1")
	// The first attempt creates the marker before its sleep; the test
	// kills the executor only once the task runs in it.
	started := filepath.Join(t.TempDir(), "started")
	batch := e.submitCommand(3, "sh", "-c", "touch "+started+"; sleep 3; echo done")
	e.waitRunning(batch, 1)
	e.waitFile(started)

	executor := e.waitPlugin(worker, "dtf-exec-command", 0)
	require.NoError(t, syscall.Kill(executor, syscall.SIGKILL))
	e.waitPlugin(worker, "dtf-exec-command", executor)

	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 1)
	task := tasks[0]
	require.Equal(t, api.StateSucceeded, task.State, "attempts: %+v", task.Attempts)
	require.Len(t, task.Attempts, 2, "the crashed attempt is retried once")
	assert.Equal(t, api.StateFailed, task.Attempts[0].State)
	assert.Contains(t, task.Attempts[0].Reason, "executor plugin command crashed")
	assert.Equal(t, api.StateSucceeded, task.Attempts[1].State)
	require.NotNil(t, task.Outcome)
	assert.Equal(t, 2, task.Outcome.Attempt, "the outcome is the new attempt's")
	assert.Contains(t, worker.Log(), "executor plugin restarted")
}

func TestReconnectionPluginKilledMidTask(t *testing.T) {
	e := newEnv(t)
	worker := e.startSupervisedWorker("worker-1", 1, nil)
	e.waitConnected("worker-1")
	batch := e.submitCommand(1, "sh", "-c", "sleep 3; echo done")
	e.waitRunning(batch, 1)

	connector := e.waitPlugin(worker, "dtf-reconnection", 0)
	require.NoError(t, syscall.Kill(connector, syscall.SIGKILL))
	e.waitPlugin(worker, "dtf-reconnection", connector)

	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 1)
	e.requireExactlyOnce(tasks)
	assert.Contains(t, worker.Log(), "connector plugin stopped, restarting it")
}

func TestWorkerDrainFinishesShortTask(t *testing.T) {
	e := newEnv(t)
	worker := e.startSupervisedWorker("worker-1", 2, map[string]string{"drain_timeout": `"30s"`})
	e.waitConnected("worker-1")
	started := filepath.Join(t.TempDir(), "started")
	batch := e.submitCommand(1, "sh", "-c", "touch "+started+"; sleep 3; echo done")
	e.waitRunning(batch, 1)
	e.waitFile(started)

	stopped := make(chan error, 1)
	go func() { stopped <- worker.Stop(45 * time.Second) }()
	err := cluster.Poll(context.Background(), 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		return e.workerState("worker-1") == api.WorkerDraining, nil
	})
	require.NoError(t, err, "the coordinator does not list the worker as draining\n%s", e.logs())

	// A task submitted during the drain is not assigned to the worker.
	later := e.submitCommand(1, "true")

	require.NoError(t, <-stopped, "the worker exits 0 after its drain\n%s", e.logs())
	tasks := e.waitTerminal(batch, 30*time.Second)
	e.requireExactlyOnce(tasks)
	assert.Equal(t, api.WorkerDrained, e.workerState("worker-1"), "a drained worker is not lost")

	queued, err := e.client.ListTasks(context.Background(), later, "")
	require.NoError(t, err)
	require.Len(t, queued, 1)
	assert.Equal(t, api.StateQueued, queued[0].State)
	assert.Zero(t, queued[0].Attempt, "the draining worker got a new task")
}

func TestWorkerDrainReleasesLongTask(t *testing.T) {
	e := newEnv(t)
	first := e.startSupervisedWorker("worker-1", 1, map[string]string{"drain_timeout": `"1s"`})
	e.waitConnected("worker-1")
	// With max_attempts 1, the task can only succeed if the released
	// attempt does not count.
	// The marker file shows that the executor runs the task: a task that
	// the coordinator lists as running may still be on its way to the
	// executor, and the drain would then release it before the timeout.
	started := filepath.Join(t.TempDir(), "started")
	batch := e.submitCommand(1, "sh", "-c", "touch "+started+"; sleep 4; echo done")
	e.waitRunning(batch, 1)
	e.waitFile(started)

	require.NoError(t, first.Stop(30*time.Second), "the worker exits 0 after its drain\n%s", e.logs())
	assert.Equal(t, api.WorkerDrained, e.workerState("worker-1"), "a drained worker is not lost")
	assert.Contains(t, first.Log(), "drain timeout passed; releasing running tasks")

	e.startSupervisedWorker("worker-2", 1, nil)
	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 1)
	task := tasks[0]
	require.Equal(t, api.StateSucceeded, task.State, "attempts: %+v", task.Attempts)
	assert.Equal(t, 1, task.Released)
	assert.Equal(t, []string{"released", api.StateSucceeded}, attemptStates(task))
	assert.Equal(t, "worker-1", task.Attempts[0].WorkerID)
	assert.Equal(t, "worker-2", task.Attempts[1].WorkerID)
}

func TestWorkerSecondSigtermStopsAtOnce(t *testing.T) {
	e := newEnv(t)
	worker := e.startSupervisedWorker("worker-1", 1, map[string]string{"drain_timeout": `"10m"`})
	e.waitConnected("worker-1")
	started := filepath.Join(t.TempDir(), "started")
	batch := e.submitCommand(1, "sh", "-c", "touch "+started+"; sleep 600")
	e.waitRunning(batch, 1)
	e.waitFile(started)

	require.NoError(t, worker.Signal(syscall.SIGTERM))
	err := cluster.Poll(context.Background(), 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		return e.workerState("worker-1") == api.WorkerDraining, nil
	})
	require.NoError(t, err, "the coordinator does not list the worker as draining\n%s", e.logs())
	require.NoError(t, worker.Signal(syscall.SIGTERM))
	select {
	case <-worker.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("the worker did not stop at once on a second SIGTERM\n%s", e.logs())
	}
	require.NoError(t, worker.Stop(time.Second), "the worker exits 0")
	assert.Contains(t, worker.Log(), "stopping at once")

	// The attempt was released, so the task waits for another worker with
	// its only attempt unused.
	err = cluster.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		tasks, err := e.client.ListTasks(context.Background(), batch, api.StateQueued)
		return err == nil && len(tasks) == 1 && tasks[0].Released == 1, nil
	})
	require.NoError(t, err, "the task was not released\n%s", e.logs())
	assert.Equal(t, api.WorkerDrained, e.workerState("worker-1"), "a drained worker is not lost")
}

// waitFile waits until a task's command has created path, which shows
// that the executor runs the task: the coordinator lists a task as
// running from its assignment, before the executor has it.
func (e *env) waitFile(path string) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		_, err := os.Stat(path)
		return err == nil, nil
	})
	require.NoError(e.t, err, "the task did not start: %s does not exist\n%s", path, e.logs())
}

// waitTaskStarted waits until the coordinator logged the task_started
// frame of task id, which the worker host sends as it hands the attempt to
// its executor.
func (e *env) waitTaskStarted(id string) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		for _, line := range strings.Split(e.coordinator.Log(), "\n") {
			if strings.Contains(line, "task started") && strings.Contains(line, "task_id="+id) {
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(e.t, err, "the worker did not start task %s\n%s", id, e.logs())
}
