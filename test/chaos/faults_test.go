package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/test/cluster"
)

// Shape of each single-fault test: two workers with three slots each, and
// as many tasks as slots, half shell commands and half checkpointing
// executors. Each task runs about six seconds, so it still runs when the
// fault hits.
const (
	singleFaultWorkers  = 2
	singleFaultCommands = 3
	singleFaultSteps    = 60
)

// TestEachFault runs each fault kind of the chaos schedule on its own, on a
// fresh cluster, while tasks run. Every task must succeed and the store
// must hold every invariant that Check proves. Each subtest also checks
// what the fault did to the attempts it hit: a host kill loses them, a
// killed executor fails them as retryable, and every other fault leaves
// them running to their end.
func TestEachFault(t *testing.T) {
	if testing.Short() {
		t.Skip("each fault runs its own cluster for about 20 seconds")
	}
	faults := []Fault{
		{Kind: Cut, For: 2 * time.Second},
		// Longer than the 2 s heartbeat timeout, so both sides notice.
		{Kind: Blackhole, For: 3 * time.Second},
		{Kind: Latency, For: 3 * time.Second},
		{Kind: CoordinatorKill, For: time.Second},
		{Kind: HostKill, For: time.Second},
	}
	for _, plugin := range Plugins {
		faults = append(faults, Fault{Kind: PluginKill, Plugin: plugin})
	}
	for _, kind := range Kinds {
		covered := slices.ContainsFunc(faults, func(f Fault) bool { return f.Kind == kind })
		require.True(t, covered, "fault kind %s has no subtest", kind)
	}

	for _, f := range faults {
		t.Run(faultName(f), func(t *testing.T) {
			t.Parallel()
			runSingleFault(t, f)
		})
	}
}

// faultName names a fault by its kind and, for a plugin kill, the plugin
// binary, such as "plugin-kill-dtf-exec-command".
func faultName(f Fault) string {
	if f.Plugin != "" {
		return string(f.Kind) + "-" + f.Plugin
	}
	return string(f.Kind)
}

// hitAttempt is an attempt that ran when its fault hit.
type hitAttempt struct {
	attempt  int
	taskType string
	// checkpointed is true when the task had a stored checkpoint before
	// the fault, so that a later attempt must resume from one.
	checkpointed bool
}

func runSingleFault(t *testing.T, f Fault) {
	c := newChaosCluster(t, singleFaultWorkers)
	batch := "fault-" + faultName(f)
	specs := singleFaultTasks()
	c.submit(batch, specs)
	running := c.waitAllRunning(batch, len(specs))

	f.Worker = pickWorker(c, running, f)
	hit := hitAttempts(c, running, f)
	require.NotEmpty(t, hit, "no task runs where the %s fault hits", faultName(f))
	if f.Kind == PluginKill {
		w := c.workers[f.Worker]
		require.NotZero(t, cluster.ChildNamed(w.process.Pid(), f.Plugin), "%s of %s is not running", f.Plugin, w.id)
	}
	t.Logf("fault %s on worker %d for %s hits %d running attempts", faultName(f), f.Worker, f.For, len(hit))
	require.True(t, c.apply(f), "the %s fault found no target", faultName(f))
	if f.Kind == Cut {
		// apply returns at once for a cut, and healAll would end the cut
		// early, so the test holds it here.
		c.hold(f.For)
	}
	c.healAll()

	c.waitTerminal(batch, 2*time.Minute)
	tasks := c.tasksWithAttempts(batch)
	for id, h := range hit {
		checkHitAttempt(t, f, tasks[id], h)
	}
	if breaksSession(f) {
		c.requireReconnected(c.workers[f.Worker].id)
	}

	c.stopAll()
	report := c.check(batch)
	assert.Equal(t, len(specs), report.TasksByState[api.StateSucceeded],
		"every task has attempts to spare, so every task must succeed: %v", report.TasksByState)
}

// singleFaultTasks returns as many tasks as the workers have slots, so
// that every task runs at once.
func singleFaultTasks() []api.TaskSpec {
	var tasks []api.TaskSpec
	for i := range singleFaultCommands {
		argv, _ := json.Marshal(map[string]any{"argv": []string{"sh", "-c", "sleep 6; echo done"}})
		steps, _ := json.Marshal(map[string]any{"steps": singleFaultSteps, "interval_ms": 100})
		tasks = append(tasks,
			api.TaskSpec{Name: fmt.Sprintf("command-%d", i), Type: "command", Payload: argv},
			api.TaskSpec{Name: fmt.Sprintf("checkpoint-%d", i), Type: "checkpoint", Payload: steps},
		)
	}
	for i := range tasks {
		tasks[i].Timeout = "2m"
		// A fault costs at most a few attempts: the lost or failed one,
		// and assignments that a restarting executor rejects.
		tasks[i].MaxAttempts = 10
	}
	return tasks
}

// waitAllRunning waits until n tasks of the batch run and each
// checkpointing task among them has a stored checkpoint, and returns them.
func (c *chaosCluster) waitAllRunning(batch string, n int) []api.Task {
	c.t.Helper()
	ctx := context.Background()
	var running []api.Task
	err := cluster.Poll(ctx, time.Minute, 50*time.Millisecond, func() (bool, error) {
		tasks, err := c.client.ListTasks(ctx, batch, api.StateRunning)
		if err != nil || len(tasks) < n {
			return false, nil
		}
		for _, task := range tasks {
			if task.Type == "checkpoint" && task.Checkpoint == nil {
				return false, nil
			}
		}
		running = tasks
		return true, nil
	})
	require.NoError(c.t, err, "fewer than %d tasks of %s run\n%s", n, batch, c.logs())
	return running
}

// pickWorker returns the index of the worker that runs the most tasks of
// the type the fault matters most to: command tasks for a kill of the
// command executor, checkpointing tasks for every other fault.
func pickWorker(c *chaosCluster, running []api.Task, f Fault) int {
	taskType := "checkpoint"
	if f.Plugin == "dtf-exec-command" {
		taskType = "command"
	}
	best, bestCount := 0, -1
	for i, w := range c.workers {
		count := 0
		for _, task := range running {
			if task.WorkerID == w.id && task.Type == taskType {
				count++
			}
		}
		if count > bestCount {
			best, bestCount = i, count
		}
	}
	return best
}

// hitAttempts returns the running attempts that the fault hits: every one
// for a coordinator kill, else those of the fault's worker.
func hitAttempts(c *chaosCluster, running []api.Task, f Fault) map[string]hitAttempt {
	hit := map[string]hitAttempt{}
	for _, task := range running {
		if f.Kind != CoordinatorKill && task.WorkerID != c.workers[f.Worker].id {
			continue
		}
		hit[task.ID] = hitAttempt{attempt: task.Attempt, taskType: task.Type, checkpointed: task.Checkpoint != nil}
	}
	return hit
}

// tasksWithAttempts returns every task of the batch, with its attempts, by
// id.
func (c *chaosCluster) tasksWithAttempts(batch string) map[string]*api.Task {
	c.t.Helper()
	ctx := context.Background()
	list, err := c.client.ListTasks(ctx, batch, "")
	require.NoError(c.t, err)
	tasks := map[string]*api.Task{}
	for _, task := range list {
		full, err := c.client.GetTask(ctx, task.ID)
		require.NoError(c.t, err)
		tasks[task.ID] = full
	}
	return tasks
}

// checkHitAttempt checks how the attempt that the fault hit ended. A host
// kill loses it, and a killed executor fails it as retryable. The task then
// succeeds on a later attempt, which resumes from its checkpoint if it had
// one. Every other fault leaves the attempt running to its end, so it
// succeeds.
func checkHitAttempt(t *testing.T, f Fault, task *api.Task, h hitAttempt) {
	t.Helper()
	require.NotNil(t, task)
	require.GreaterOrEqual(t, len(task.Attempts), h.attempt, "task %s attempts: %+v", task.ID, task.Attempts)
	got := task.Attempts[h.attempt-1]

	var want string
	switch {
	case f.Kind == HostKill:
		want = store.AttemptLost
	case f.Kind == PluginKill && f.Plugin == "dtf-exec-"+h.taskType:
		want = api.StateFailed
	default:
		want = api.StateSucceeded
	}
	name := faultName(f)
	assert.Equal(t, want, got.State, "task %s (%s) attempt %d, hit by %s: %s",
		task.ID, task.Name, h.attempt, name, got.Reason)
	if want == api.StateSucceeded {
		assert.Equal(t, h.attempt, task.Attempt, "task %s (%s) was handed out again after %s: %+v",
			task.ID, task.Name, name, task.Attempts)
		return
	}

	require.Greater(t, len(task.Attempts), h.attempt, "task %s (%s) was not retried after %s",
		task.ID, task.Name, name)
	next := task.Attempts[h.attempt]
	if h.checkpointed {
		assert.NotNil(t, next.ResumedFrom, "task %s (%s) attempt %d started without the checkpoint stored before %s",
			task.ID, task.Name, next.Attempt, name)
	}
}

// breaksSession reports whether the fault ends the worker's connection,
// so that the worker must connect again. A coordinator kill does too, but
// the restarted coordinator counts connections from zero.
func breaksSession(f Fault) bool {
	switch f.Kind {
	case Cut, Blackhole, HostKill:
		return true
	case PluginKill:
		return f.Plugin == "dtf-reconnection"
	}
	return false
}

// requireReconnected checks that the coordinator saw the worker connect
// more than once.
func (c *chaosCluster) requireReconnected(id string) {
	c.t.Helper()
	workers, err := c.client.ListWorkers(context.Background())
	require.NoError(c.t, err)
	for _, w := range workers {
		if w.ID == id {
			assert.GreaterOrEqual(c.t, w.Connects, 2, "worker %s never lost its connection to the fault", id)
			return
		}
	}
	c.t.Errorf("the coordinator does not list worker %s", id)
}
