package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

func TestRunJSONPrintsOneSummary(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{{task("t1", api.StateFailed)}},
		outcomes: map[string]*api.Outcome{"t1": {Status: "failed", ExitCode: 1}}}
	app, stdout, stderr := testApp(fake.start(t), false)
	code := runApp(app, "run", "-output", "json", "-type", "command", "-name", "hi", "-interval", "100ms",
		"--", "sh", "-c", "exit 1")
	assert.Equal(t, ExitTasksFailed, code, "stderr: %s", stderr)

	var out watchSummary
	decoder := json.NewDecoder(stdout)
	require.NoError(t, decoder.Decode(&out), "stdout: %s", stdout)
	assert.False(t, decoder.More(), "stdout has more than one JSON value")
	assert.Equal(t, "b1", out.Batch)
	assert.Equal(t, 1, out.Counts[api.StateFailed])
	assert.Contains(t, out.Counts, api.StateQueued, "every state is counted")
	require.Len(t, out.Tasks, 1)
	assert.Equal(t, "t1", out.Tasks[0].ID)
	assert.Equal(t, "exit code 1", out.Tasks[0].Result)
}

func TestWatchJSONHasNoProgress(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{
		{task("t1", api.StateRunning), task("t2", api.StateQueued)},
		{task("t1", api.StateSucceeded), task("t2", api.StateSucceeded)},
	}}
	app, stdout, stderr := testApp(fake.start(t), true)
	code := runApp(app, "watch", "-batch", "b1", "-output", "json", "-interval", "100ms")
	assert.Equal(t, ExitOK, code, "stderr: %s", stderr)
	assert.NotContains(t, stdout.String(), "\r", "no progress bar")

	var out watchSummary
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "stdout: %s", stdout)
	assert.Equal(t, 2, out.Counts[api.StateSucceeded])
	require.Len(t, out.Tasks, 2)
	assert.Equal(t, "ok", out.Tasks[1].Result)
}

func TestWatchRejectsUnknownOutput(t *testing.T) {
	app, _, stderr := testApp("http://127.0.0.1:1", false)
	assert.Equal(t, ExitError, runApp(app, "watch", "-batch", "b1", "-output", "yaml"))
	assert.Contains(t, stderr.String(), `invalid -output "yaml"`)
}

func TestVersionJSON(t *testing.T) {
	app, stdout, _ := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "version", "-output", "json"))
	var out map[string]string
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "stdout: %s", stdout)
	assert.Equal(t, Version, out["version"])
	assert.Equal(t, runtime.Version(), out["go"])
	assert.Equal(t, runtime.GOOS+"/"+runtime.GOARCH, out["os"]+"/"+out["arch"])
}

func TestValidateJSON(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(valid, []byte("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"), 0o600))
	invalid := filepath.Join(dir, "broken.hcl")
	require.NoError(t, os.WriteFile(invalid, []byte("listen = \n"), 0o600))

	app, stdout, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "validate", "-config", valid, "-output", "json"), stderr.String())
	var out validateResult
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "stdout: %s", stdout)
	assert.True(t, out.Valid)
	assert.Equal(t, kindCoordinator, out.Kind)
	assert.Empty(t, out.Error)

	app, stdout, _ = testApp("", false)
	require.Equal(t, ExitInvalidConfig, runApp(app, "validate", "-config", invalid, "-kind", "coordinator",
		"-output", "json"))
	out = validateResult{}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "stdout: %s", stdout)
	assert.False(t, out.Valid)
	assert.NotEmpty(t, out.Error)
}

func TestWorkersNaturalOrder(t *testing.T) {
	fake := &fakeCoordinator{workers: []api.Worker{{ID: "w10"}, {ID: "w2"}, {ID: "w1"}}}
	app, stdout, _ := testApp(fake.start(t), false)
	require.Equal(t, ExitOK, runApp(app, "workers", "-output", "json"))
	var out struct{ Workers []api.Worker }
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out))
	ids := make([]string, 0, len(out.Workers))
	for _, w := range out.Workers {
		ids = append(ids, w.ID)
	}
	assert.Equal(t, []string{"w1", "w2", "w10"}, ids)
}
