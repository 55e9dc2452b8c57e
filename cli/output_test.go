package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

func TestETAEstimate(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	var e etaEstimator
	_, ok := e.estimate(t0, 2, 10)
	assert.False(t, ok, "the first poll has no rate")
	_, ok = e.estimate(t0.Add(10*time.Second), 2, 10)
	assert.False(t, ok, "no task ended since the first poll")

	left, ok := e.estimate(t0.Add(20*time.Second), 4, 10)
	require.True(t, ok)
	assert.Equal(t, time.Minute, left, "2 tasks in 20s, 6 left")

	left, ok = e.estimate(t0.Add(40*time.Second), 10, 10)
	require.True(t, ok)
	assert.Zero(t, left)
}

func TestFormatETA(t *testing.T) {
	cases := []struct {
		left time.Duration
		want string
	}{
		{300 * time.Millisecond, "ETA <1s"},
		{42*time.Second + 400*time.Millisecond, "ETA 42s"},
		{3*time.Minute + 12*time.Second, "ETA 3m12s"},
		{2*time.Hour + 5*time.Minute + 40*time.Second, "ETA 2h6m"},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, formatETA(tc.left), "left %s", tc.left)
	}
}

// steppingClock returns a clock that moves step forward on each call.
func steppingClock(start time.Time, step time.Duration) func() time.Time {
	var mu sync.Mutex
	now := start.Add(-step)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(step)
		return now
	}
}

func TestWatchTerminalShowsETA(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{
		{task("t1", api.StateRunning), task("t2", api.StateQueued), task("t3", api.StateQueued),
			task("t4", api.StateQueued)},
		{task("t1", api.StateSucceeded), task("t2", api.StateRunning), task("t3", api.StateQueued),
			task("t4", api.StateQueued)},
		{task("t1", api.StateSucceeded), task("t2", api.StateSucceeded), task("t3", api.StateRunning),
			task("t4", api.StateQueued)},
		{task("t1", api.StateSucceeded), task("t2", api.StateSucceeded), task("t3", api.StateSucceeded),
			task("t4", api.StateSucceeded)},
	}}
	app, stdout, _ := testApp(fake.start(t), true)
	app.Now = steppingClock(time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC), 10*time.Second)
	require.Equal(t, ExitOK, runApp(app, "watch", "-batch", "b1", "-interval", "100ms"))
	out := stdout.String()
	assert.Contains(t, out, "1/4 done  queued 2  running 1  succeeded 1  failed 0  cancelled 0  timed_out 0  ETA 30s")
	assert.Contains(t, out, "2/4 done  queued 1  running 1  succeeded 2  failed 0  cancelled 0  timed_out 0  ETA 20s")
	assert.NotContains(t, out, "4/4 done  queued 0  running 0  succeeded 4  failed 0  cancelled 0  timed_out 0  ETA",
		"a finished batch has no ETA")
}

func TestWatchPlainHasNoETA(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{
		{task("t1", api.StateRunning), task("t2", api.StateQueued)},
		{task("t1", api.StateSucceeded), task("t2", api.StateRunning)},
		{task("t1", api.StateSucceeded), task("t2", api.StateSucceeded)},
	}}
	app, stdout, _ := testApp(fake.start(t), false)
	app.Now = steppingClock(time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC), 10*time.Second)
	require.Equal(t, ExitOK, runApp(app, "watch", "-batch", "b1", "-interval", "100ms"))
	assert.Contains(t, stdout.String(), "1/2 done")
	assert.NotContains(t, stdout.String(), "ETA")
	assert.NotContains(t, stdout.String(), "\r")
}

func TestCancelJSON(t *testing.T) {
	fake := &fakeCoordinator{}
	app, stdout, stderr := testApp(fake.start(t), false)
	assert.Equal(t, ExitError, runApp(app, "cancel", "-output", "json", "t1", "done"))
	var out struct{ Tasks []api.Task }
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "stdout: %s", stdout)
	require.Len(t, out.Tasks, 1)
	assert.Equal(t, "t1", out.Tasks[0].ID)
	assert.Equal(t, api.StateCancelled, out.Tasks[0].State)
	assert.Contains(t, stderr.String(), "cancel done: the task already ended")
}

func TestWorkersJSONHasHistory(t *testing.T) {
	since := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	fake := &fakeCoordinator{workers: []api.Worker{{ID: "worker-1", State: api.WorkerConnected,
		StateSince: since, Reconnects: 2, DowntimeMs: 1500}}}
	app, stdout, _ := testApp(fake.start(t), false)
	require.Equal(t, ExitOK, runApp(app, "workers", "-output", "json"))
	var out struct{ Workers []api.Worker }
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out))
	require.Len(t, out.Workers, 1)
	assert.Equal(t, since, out.Workers[0].StateSince)
	assert.Equal(t, 2, out.Workers[0].Reconnects)
	assert.Equal(t, int64(1500), out.Workers[0].DowntimeMs)
}

func TestListCommandsJSON(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(config, []byte("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"), 0o600))

	app, _, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "create", "-config", config, "-worker", "worker-1"),
		stderr.String())
	app, tokenOut, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "tokens", "create", "-config", config, "-role", "read", "-name", "ci"),
		stderr.String())

	app, stdout, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "list", "-config", config, "-output", "json"),
		stderr.String())
	var creds struct {
		Credentials []map[string]any `json:"credentials"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &creds), "stdout: %s", stdout)
	require.Len(t, creds.Credentials, 1)
	assert.Equal(t, "worker-1", creds.Credentials[0]["worker_id"])
	assert.Equal(t, "active", creds.Credentials[0]["state"])
	assert.NotContains(t, creds.Credentials[0], "stored_key", "no verifier in the output")

	app, stdout, stderr = testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "tokens", "list", "-config", config, "-output", "json"), stderr.String())
	var tokens struct {
		Tokens []map[string]any `json:"tokens"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &tokens), "stdout: %s", stdout)
	require.Len(t, tokens.Tokens, 1)
	assert.Equal(t, "ci", tokens.Tokens[0]["name"])
	assert.Equal(t, "read", tokens.Tokens[0]["role"])
	assert.Equal(t, "active", tokens.Tokens[0]["state"])
	assert.NotContains(t, stdout.String(), tokenPattern.FindString(tokenOut.String()), "no token in the output")

	app, _, stderr = testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "tokens", "list", "-config", config, "-output", "yaml"))
	assert.Contains(t, stderr.String(), `invalid -output "yaml"`)
}
