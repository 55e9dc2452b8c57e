package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

// drainHeartbeatTimeout is the heartbeat timeout of both the coordinator
// and the worker in newEnv and startSupervisedWorker.
const drainHeartbeatTimeout = 2 * time.Second

// A worker that drains for four heartbeat timeouts keeps its session: it
// goes on heartbeating, the coordinator lists it as draining and never as
// disconnected, and its task finishes in the first attempt.
func TestDrainKeepsHeartbeating(t *testing.T) {
	t.Parallel()
	const id = "worker-1"
	// The task sleeps 8 s after it starts, so the drain lasts about four
	// heartbeat timeouts, and drain_timeout leaves it time to finish.
	const taskSeconds = "8"
	e := newEnv(t)
	worker := e.startSupervisedWorker(id, 1, map[string]string{"drain_timeout": `"60s"`})
	e.waitConnected(id)
	first := e.workerRow(id)
	require.Equal(t, 1, first.Connects)

	started := filepath.Join(t.TempDir(), "started")
	batch := e.submitCommand(1, "sh", "-c", "touch "+started+"; sleep "+taskSeconds+"; echo done")
	e.waitRunning(batch, 1)
	e.waitFile(started)

	stopped := make(chan error, 1)
	drainStart := time.Now()
	go func() { stopped <- worker.Stop(90 * time.Second) }()

	// Until the worker exits, the coordinator must list it as draining in
	// its first session. lastSeen is the newest frame the coordinator had
	// from it while it was draining.
	var lastSeen time.Time
	draining := 0
	deadline := time.After(90 * time.Second)
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for exited := false; !exited; {
		select {
		case err := <-stopped:
			require.NoError(t, err, "the worker exits 0 after its drain\n%s", e.logs())
			exited = true
			continue
		case <-deadline:
			t.Fatalf("the worker did not exit within 90s of SIGTERM\n%s", e.logs())
		case <-ticker.C:
		}
		w := e.workerRow(id)
		if w.State == api.WorkerDrained {
			continue
		}
		require.Equal(t, api.WorkerDraining, w.State, "worker state during the drain\n%s", e.logs())
		require.Equal(t, first.SessionID, w.SessionID, "the draining worker opened another session")
		require.Equal(t, 1, w.Connects, "sessions the worker opened")
		draining++
		if w.LastSeen.After(lastSeen) {
			lastSeen = w.LastSeen
		}
	}
	require.Positive(t, draining, "the coordinator never listed the worker as draining")

	// Frames from the worker reached the coordinator later in the drain
	// than one heartbeat timeout before its end, and the drain outlasted
	// the timeout several times over.
	drain := time.Since(drainStart)
	assert.Greater(t, drain, 3*drainHeartbeatTimeout, "the drain was too short to show heartbeats")
	assert.Greater(t, lastSeen, drainStart.Add(drain-drainHeartbeatTimeout),
		"the coordinator heard nothing from the draining worker in its last heartbeat timeout")

	// The timeline shows one session: connected, then draining, then
	// drained, and no disconnection or reconnect in between.
	timeline, err := e.client.WorkerTimeline(context.Background(), id)
	require.NoError(t, err)
	var states []string
	for _, event := range timeline.Events {
		states = append(states, event.State)
		if event.SessionID != "" {
			assert.Equal(t, first.SessionID, event.SessionID, "session of timeline event %+v", event)
		}
	}
	assert.Equal(t, []string{api.WorkerConnected, api.WorkerDraining, api.WorkerDrained}, states)
	assert.Zero(t, timeline.Reconnects)
	assert.Zero(t, timeline.DowntimeMs, "a drain is not downtime")

	final := e.workerRow(id)
	assert.Equal(t, api.WorkerDrained, final.State, "a drained worker is not lost")
	assert.Equal(t, 1, final.Connects)
	assert.Zero(t, final.Reconnects)
	assert.NotContains(t, worker.Log(), "disconnected from coordinator")
	assert.NotContains(t, worker.Log(), "drain timeout passed")

	tasks := e.waitTerminal(batch, 30*time.Second)
	e.requireExactlyOnce(tasks)
	require.Len(t, tasks[0].Attempts, 1, "attempts: %+v", tasks[0].Attempts)
	assert.Equal(t, id, tasks[0].Attempts[0].WorkerID)
	assert.Contains(t, tasks[0].Outcome.Output, "done")
}

// workerRow returns the coordinator's row of worker id.
func (e *env) workerRow(id string) api.Worker {
	e.t.Helper()
	workers, err := e.client.ListWorkers(context.Background())
	require.NoError(e.t, err)
	for _, w := range workers {
		if w.ID == id {
			return w
		}
	}
	e.t.Fatalf("the coordinator does not list worker %s\n%s", id, e.logs())
	return api.Worker{}
}

// A worker declares os and arch from the platform of its host binary, a
// value that worker.hcl sets wins, and both the API and `dtf workers`
// show the labels.
func TestWorkerDeclaresPlatformLabels(t *testing.T) {
	t.Parallel()
	const id = "worker-1"
	e := newEnv(t)
	e.startSupervisedWorker(id, 1, map[string]string{"labels": `{ arch = "custom", gpu = "true" }`})
	e.waitConnected(id)

	want := map[string]string{"os": runtime.GOOS, "arch": "custom", "gpu": "true"}
	assert.Equal(t, want, e.workerRow(id).Labels)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin.Path("dtf"), "-addr", "http://"+e.addr, "workers").CombinedOutput()
	require.NoError(t, err, "dtf workers:\n%s", out)
	assert.Contains(t, string(out), "arch=custom,gpu=true,os="+runtime.GOOS)

	// A task that requires the added label runs on the worker.
	req := api.SubmitRequest{Tasks: []api.TaskSpec{{
		Name: "on-os", Type: "command", Payload: []byte(`{"argv":["true"]}`), Timeout: "1m",
		Labels: map[string]string{"os": runtime.GOOS},
	}}}
	resp, err := e.client.Submit(ctx, req)
	require.NoError(t, err)
	tasks := e.waitTerminal(resp.Batch, 30*time.Second)
	e.requireExactlyOnce(tasks)
}
