package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/test/cluster"
)

// checkpointPlugin is the worker config block of the example checkpoint
// executor, added to the block that cluster.WriteWorkerConfig writes.
const checkpointPlugin = `
plugin "checkpoint" {
  kind = "executor"
  path = %q
}
`

// enableCheckpointTasks restarts the coordinator with the checkpoint task
// type and the given reassign_after.
func (e *env) enableCheckpointTasks(reassignAfter time.Duration) {
	e.t.Helper()
	require.NoError(e.t, e.coordinator.Stop(10*time.Second))
	e.coordCfg.TaskTypes = append(e.coordCfg.TaskTypes, "checkpoint")
	e.coordCfg.ReassignAfter = reassignAfter
	require.NoError(e.t, cluster.WriteCoordinatorConfig(e.coordConfig, e.coordCfg))
	e.startCoordinator()
}

// startCheckpointWorker starts a worker that also runs the checkpoint
// executor.
func (e *env) startCheckpointWorker(id string) *cluster.Process {
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
	}))
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(e.t, err)
	_, err = fmt.Fprintf(f, checkpointPlugin, bin.Path("dtf-exec-checkpoint"))
	require.NoError(e.t, errors.Join(err, f.Close()))

	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"), bin.Path("dtf"), []string{"worker", "-config", config})
	require.NoError(e.t, err)
	e.workers[id] = p
	return p
}

// checkpointReport is the result data of the example checkpoint executor.
type checkpointReport struct {
	StartedAt   int                `json:"started_at"`
	Steps       int                `json:"steps"`
	ResumedFrom *api.CheckpointRef `json:"resumed_from"`
}

// TestCheckpointResumeAfterWorkerKill runs a task that checkpoints every
// 100 ms, SIGKILLs its worker host once the coordinator stored at least 37
// checkpoints, and checks that the retried attempt on another worker
// resumes from the newest checkpoint the coordinator acknowledged.
func TestCheckpointResumeAfterWorkerKill(t *testing.T) {
	const (
		steps    = 60
		killFrom = 37
	)
	e := newEnv(t)
	e.enableCheckpointTasks(3 * time.Second)
	first := e.startCheckpointWorker("worker-1")
	e.waitConnected("worker-1")

	ctx := context.Background()
	resp, err := e.client.Submit(ctx, api.SubmitRequest{Tasks: []api.TaskSpec{{
		Name: "count", Type: "checkpoint", Timeout: "2m", MaxAttempts: 3,
		Payload: json.RawMessage(fmt.Sprintf(`{"steps":%d,"interval_ms":100}`, steps)),
	}}})
	require.NoError(t, err)
	id := resp.Tasks[0].ID

	// Kill the host once the store has checkpoint 37 of attempt 1.
	err = cluster.Poll(ctx, time.Minute, 20*time.Millisecond, func() (bool, error) {
		task, err := e.client.GetTask(ctx, id)
		return err == nil && task.Checkpoint != nil && task.Checkpoint.Sequence >= killFrom, nil
	})
	require.NoError(t, err, "no checkpoint %d stored\n%s", killFrom, e.logs())
	first.Kill()
	e.waitDisconnected("worker-1")

	// Every checkpoint the coordinator acknowledged is stored by now; the
	// next attempt must not start before the newest of them.
	killed, err := e.client.GetTask(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, killed.Checkpoint)
	acked := *killed.Checkpoint
	require.Equal(t, 1, acked.Attempt)
	require.GreaterOrEqual(t, acked.Sequence, uint64(killFrom))
	require.Less(t, acked.Sequence, uint64(steps), "the task finished before its worker was killed")

	e.startCheckpointWorker("worker-2")
	tasks := e.waitTerminal(resp.Batch, 2*time.Minute)
	require.Len(t, tasks, 1)
	e.requireExactlyOnce(tasks)
	task := tasks[0]

	require.Len(t, task.Attempts, 2, "attempts: %+v", task.Attempts)
	assert.Equal(t, store.AttemptLost, task.Attempts[0].State)
	assert.Equal(t, "worker-2", task.Attempts[1].WorkerID)
	resumed := task.Attempts[1].ResumedFrom
	require.NotNil(t, resumed, "the retried attempt started without a checkpoint")
	assert.Equal(t, 1, resumed.Attempt)
	assert.GreaterOrEqual(t, resumed.Sequence, acked.Sequence,
		"the retried attempt started before the newest acknowledged checkpoint")

	var report checkpointReport
	require.NoError(t, json.Unmarshal(task.Outcome.Result, &report))
	assert.Equal(t, steps, report.Steps)
	assert.Equal(t, int(resumed.Sequence), report.StartedAt, "the executor resumed where the Assign said")
	require.NotNil(t, report.ResumedFrom)
	assert.Equal(t, *resumed, *report.ResumedFrom)

	require.NotNil(t, task.Checkpoint)
	assert.Equal(t, 2, task.Checkpoint.Attempt)
	assert.EqualValues(t, steps-report.StartedAt, task.Checkpoint.Sequence)

	e.requireCheckpointsForward(id)
}

// requireCheckpointsForward reads the task's checkpoint history from the
// coordinator's store and checks that each stored checkpoint was newer
// than the one before it.
func (e *env) requireCheckpointsForward(taskID string) {
	e.t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(e.coordCfg.DataDir, coordinator.StoreFile))
	require.NoError(e.t, err)
	defer st.Close()
	history, err := st.CheckpointHistory(ctx, taskID)
	require.NoError(e.t, err)
	require.NotEmpty(e.t, history)
	for i := 1; i < len(history); i++ {
		prev, cur := history[i-1], history[i]
		newer := cur.Attempt > prev.Attempt || (cur.Attempt == prev.Attempt && cur.Sequence > prev.Sequence)
		require.True(e.t, newer, "checkpoint history moved backwards at position %d: %+v after %+v",
			cur.Position, cur, prev)
	}
}
