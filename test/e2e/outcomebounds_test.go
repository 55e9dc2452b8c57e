package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// bigOutputCommand prints about 5 MB and then a last line, more than one
// 4 MiB frame holds.
var bigOutputCommand = []string{"sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' o; echo; echo last-line"}

// startBigOutputWorker starts a worker whose command executor keeps up to
// 6 MB of output, so the worker host's own bounds are what shrink it.
// reconnection sets attributes of the reconnection plugin's config block.
func (e *env) startBigOutputWorker(id string, reconnection map[string]string) {
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
		Reconnection:      reconnection,
	}))
	data, err := os.ReadFile(config)
	require.NoError(e.t, err)
	const commandEnv = "  env  = [\"PATH\", \"HOME\"]\n}"
	text := string(data)
	require.Contains(e.t, text, commandEnv, "the command plugin block changed; update this test")
	text = strings.Replace(text, commandEnv,
		"  env  = [\"PATH\", \"HOME\"]\n  config {\n    max_output_bytes = 6000000\n  }\n}", 1)
	require.NoError(e.t, os.WriteFile(config, []byte(text), 0o600))

	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"),
		bin.Path("dtf"), []string{"worker", "-config", config})
	require.NoError(e.t, err)
	e.workers[id] = p
}

// submitBigOutput submits one bigOutputCommand task with max_attempts 1.
func (e *env) submitBigOutput() string {
	e.t.Helper()
	payload, err := json.Marshal(map[string]any{"argv": bigOutputCommand})
	require.NoError(e.t, err)
	resp, err := e.client.Submit(context.Background(), api.SubmitRequest{Tasks: []api.TaskSpec{{
		Name: "big-output", Type: "command", Payload: payload, Timeout: "2m", MaxAttempts: 1,
	}}})
	require.NoError(e.t, err)
	return resp.Batch
}

func TestLargeOutputKeepsTail(t *testing.T) {
	e := newEnv(t)
	e.startBigOutputWorker("w1", nil)
	e.waitConnected("w1")

	tasks := e.waitTerminal(e.submitBigOutput(), 60*time.Second)
	require.Len(t, tasks, 1)
	task := tasks[0]
	require.Equal(t, api.StateSucceeded, task.State, "task %+v", task.Outcome)
	require.NotNil(t, task.Outcome)
	assert.Len(t, task.Outcome.Output, 1<<20)
	assert.True(t, strings.HasSuffix(task.Outcome.Output, "last-line\n"), "the output's tail is kept")
	assert.Contains(t, task.Outcome.Message, "output cut to its last 1048576 of 5000011 bytes")
}

// A connector whose max_frame_bytes is below the bounded outcome rejects
// it, and the attempt fails with a message that names the limit.
func TestOutcomeOverFrameLimitFails(t *testing.T) {
	e := newEnv(t)
	e.startBigOutputWorker("w1", map[string]string{"max_frame_bytes": "1048576"})
	e.waitConnected("w1")

	tasks := e.waitTerminal(e.submitBigOutput(), 60*time.Second)
	require.Len(t, tasks, 1)
	task := tasks[0]
	require.Equal(t, api.StateFailed, task.State, "task %+v", task.Outcome)
	require.NotNil(t, task.Outcome)
	assert.Empty(t, task.Outcome.Output)
	assert.Contains(t, task.Outcome.Message, "rejected this attempt's succeeded outcome")
	assert.Contains(t, task.Outcome.Message, "max_frame_bytes")
	assert.Eventually(t, func() bool {
		entries, err := os.ReadDir(filepath.Join(e.dir, "w1", "outbox"))
		return err == nil && len(entries) == 0
	}, 10*time.Second, 50*time.Millisecond, "the outbox still holds the outcome")
}
