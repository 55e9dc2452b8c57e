package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

// runDTF runs the dtf binary with a time limit and returns its combined
// output and exit code.
func runDTF(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runBinary(t, "dtf", args...)
}

// runBinary runs the named binary of bin with args and returns its
// combined output and exit code.
func runBinary(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.Path(name), args...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, ctx.Err(), "%s %v did not finish:\n%s", name, args, out)
	if exit, ok := err.(*exec.ExitError); ok {
		return string(out), exit.ExitCode()
	}
	require.NoError(t, err)
	return string(out), 0
}

// workerConfig is a valid worker config with absolute plugin paths; the
// cases below break one part of it.
func workerConfig(reconnection string) string {
	return `data_dir = "data"
slots    = 1

coordinator {
  url       = "ws://127.0.0.1:1"
  worker_id = "worker-1"
}

plugin "reconnection" {
  kind = "connector"
  path = "` + reconnection + `"
}

plugin "command" {
  kind = "executor"
  path = "` + bin.Path("dtf-exec-command") + `"
}
`
}

func TestWorkerConfigErrors(t *testing.T) {
	notPlugin := filepath.Join(t.TempDir(), "not-a-plugin.sh")
	require.NoError(t, os.WriteFile(notPlugin, []byte("#!/bin/sh\necho hello\n"), 0o755))
	valid := workerConfig(bin.Path("dtf-reconnection"))

	cases := []struct {
		name   string
		config string
		want   []string
	}{
		{
			name:   "malformed HCL",
			config: strings.Replace(valid, "slots    = 1", "slots    = ", 1),
			want:   []string{"worker.hcl:2:", "slots", "   2: slots"},
		},
		{
			name:   "unknown field",
			config: strings.Replace(valid, "slots    = 1", "slots    = 1\nslot_count = 2", 1),
			want:   []string{"worker.hcl:3:1", "slot_count", "   3: slot_count = 2"},
		},
		{
			name: "duration without unit",
			config: strings.Replace(valid, `kind = "connector"`,
				"kind = \"connector\"\n  start_timeout = \"30\"", 1),
			want: []string{"worker.hcl:", "start_timeout", "30s"},
		},
		{
			name: "connector config without unit",
			config: strings.Replace(valid, `kind = "connector"`,
				"kind = \"connector\"\n  config {\n    heartbeat_interval = \"2\"\n  }", 1),
			want: []string{"heartbeat_interval", "invalid config for connector plugin reconnection"},
		},
		{
			name:   "plugin path missing",
			config: workerConfig("/nonexistent/dtf-reconnection"),
			want:   []string{"/nonexistent/dtf-reconnection", "not found"},
		},
		{
			name:   "plugin path not a plugin",
			config: workerConfig(notPlugin),
			want:   []string{notPlugin, "not a dtf plugin"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "worker.hcl")
			require.NoError(t, os.WriteFile(path, []byte(c.config), 0o644))
			out, code := runDTF(t, "worker", "-config", path)
			assert.NotEqual(t, 0, code, "output:\n%s", out)
			for _, want := range c.want {
				assert.Contains(t, out, want)
			}
		})
	}
}

func TestSubmitRejectsBadTasks(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, body, field string
	}{
		{"missing type", `{"tasks":[{"name":"a","payload":{"argv":["true"]}}]}`, "tasks[0].type"},
		{"unknown type", `{"tasks":[{"type":"nosuch","payload":{}}]}`, "tasks[0].type"},
		{"payload not an object", `{"tasks":[{"type":"command","payload":[1]}]}`, "tasks[0].payload"},
		{"unknown field", `{"tasks":[{"type":"command","payload":{},"colour":"red"}]}`, "colour"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post("http://"+e.addr+"/v1/tasks", "application/json", strings.NewReader(c.body))
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
			var body api.Error
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.Contains(t, body.Error+" "+body.Field, c.field)
		})
	}
}

func TestSubmitTaskFileMissingField(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "tasks.hcl")
	require.NoError(t, os.WriteFile(path, []byte("task \"a\" {\n  payload = { argv = [\"true\"] }\n}\n"), 0o644))
	out, code := runDTF(t, "submit", "-addr", "http://"+e.addr, "-f", path)
	assert.NotEqual(t, 0, code)
	assert.Contains(t, out, "type")
	assert.Contains(t, out, "tasks.hcl")
}

func TestTaskTypeNoWorkerServesStaysQueued(t *testing.T) {
	e := newEnv(t)
	e.startWorker("worker-1", 1)
	e.waitConnected("worker-1")

	// The coordinator accepts type "lonely", but no worker declares it.
	ctx := context.Background()
	lonely, err := e.client.Submit(ctx, api.SubmitRequest{Tasks: []api.TaskSpec{{
		Name: "lonely", Type: "lonely", Payload: json.RawMessage(`{}`),
	}}})
	require.NoError(t, err)

	// A task submitted later runs to the end while the first one waits.
	later := e.submitCommands([]string{"true"})
	e.waitTerminal(later, time.Minute)

	task, err := e.client.GetTask(ctx, lonely.Tasks[0].ID)
	require.NoError(t, err)
	assert.Equal(t, api.StateQueued, task.State)
	assert.Contains(t, task.QueuedReason, "lonely")

	out, code := runDTF(t, "tasks", "-addr", "http://"+e.addr, "-batch", lonely.Batch)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "queued")
	assert.Contains(t, out, "no connected worker serves")
}
