package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// startDrainingCheckpointWorker starts a worker that runs the example
// checkpoint executor and drains for at most drainTimeout on SIGTERM.
func (e *env) startDrainingCheckpointWorker(id, drainTimeout string) *cluster.Process {
	e.t.Helper()
	config := filepath.Join(e.dir, id+".hcl")
	require.NoError(e.t, cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
		Bin:               bin,
		URL:               "ws://" + e.proxy.Addr(),
		WorkerID:          id,
		Token:             token,
		DataDir:           filepath.Join(e.dir, id),
		Slots:             1,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BackoffBase:       100 * time.Millisecond,
		BackoffCap:        time.Second,
		HealthyAfter:      3 * time.Second,
		Top:               map[string]string{"drain_timeout": `"` + drainTimeout + `"`},
		Checkpoint:        true,
	}))
	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"), bin.Path("dtf"), []string{"worker", "-config", config})
	require.NoError(e.t, err)
	e.workers[id] = p
	return p
}

// A task that would checkpoint only at its end is released by a draining
// worker. The executor saves the step it reached when the host stops it,
// the released outcome carries that checkpoint, and the next attempt, on
// another worker, resumes from it.
func TestReleasedAttemptSavesLastCheckpoint(t *testing.T) {
	// The attempt needs 8 seconds, far more than the 2-second drain.
	const steps = 80
	e := newEnv(t)
	e.enableCheckpointTasks(20 * time.Second)
	first := e.startDrainingCheckpointWorker("worker-1", "2s")
	e.waitConnected("worker-1")

	// 100 ms per step and a checkpoint only every 1,000,000 steps: before
	// the release, the attempt saves none.
	ctx := context.Background()
	resp, err := e.client.Submit(ctx, api.SubmitRequest{Tasks: []api.TaskSpec{{
		Name: "count", Type: "checkpoint", Timeout: "5m", MaxAttempts: 1,
		Payload: json.RawMessage(fmt.Sprintf(`{"steps":%d,"interval_ms":100,"checkpoint_every":1000000}`, steps)),
	}}})
	require.NoError(t, err)
	id := resp.Tasks[0].ID
	e.waitRunning(resp.Batch, 1)
	e.waitTaskStarted(id)

	// The drain lets the attempt count for its 2 seconds and then releases it.
	require.NoError(t, first.Stop(30*time.Second), "the worker exits 0 after its drain\n%s", e.logs())
	assert.Contains(t, first.Log(), "drain timeout passed; releasing running tasks")
	released, err := e.client.GetTask(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 1, released.Released, "attempts: %+v", released.Attempts)
	require.NotNil(t, released.Checkpoint, "the released attempt saved no checkpoint\n%s", e.logs())
	saved := *released.Checkpoint
	assert.Equal(t, 1, saved.Attempt)
	assert.EqualValues(t, 1, saved.Sequence, "the only checkpoint is the one saved when stopped")
	assert.Contains(t, saved.Message, "saved when stopped")

	e.startDrainingCheckpointWorker("worker-2", "20s")
	tasks := e.waitTerminal(resp.Batch, 2*time.Minute)
	require.Len(t, tasks, 1)
	task := tasks[0]
	require.Equal(t, api.StateSucceeded, task.State, "attempts: %+v", task.Attempts)
	require.Equal(t, []string{"released", api.StateSucceeded}, attemptStates(task))
	resumed := task.Attempts[1].ResumedFrom
	require.NotNil(t, resumed, "the next attempt started without the last checkpoint")
	assert.Equal(t, api.CheckpointRef{Attempt: saved.Attempt, Sequence: saved.Sequence}, *resumed)

	var report checkpointReport
	require.NoError(t, json.Unmarshal(task.Outcome.Result, &report))
	assert.Equal(t, steps, report.Steps)
	assert.Positive(t, report.StartedAt, "the next attempt counted from the start")
}
