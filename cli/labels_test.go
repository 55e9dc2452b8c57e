package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

func TestParseTaskFileLabels(t *testing.T) {
	src := `task "cuda" {
  type    = "command"
  payload = { argv = ["nvidia-smi"] }
  labels  = { gpu = "true", os = "linux" }
}
`
	req, err := ParseTaskFile("tasks.hcl", []byte(src))
	require.NoError(t, err)
	require.Len(t, req.Tasks, 1)
	assert.Equal(t, map[string]string{"gpu": "true", "os": "linux"}, req.Tasks[0].Labels)

	cases := []struct {
		name   string
		labels string
		want   string
	}{
		{"list", `["gpu"]`, "labels must be an object of strings"},
		{"nested object", `{ gpu = { count = 2 } }`, "labels must be an object of strings"},
		{"name with equals", `{ "a=b" = "x" }`, `label name "a=b" is invalid`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := "task \"x\" {\n  type = \"command\"\n  payload = {}\n  labels = " + tc.labels + "\n}\n"
			_, err := ParseTaskFile("tasks.hcl", []byte(src))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "tasks.hcl:4:")
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	json := `{"tasks": [{"type": "command", "payload": {}, "labels": {"gpu": "true"}}]}`
	req, err = ParseTaskFile("tasks.json", []byte(json))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"gpu": "true"}, req.Tasks[0].Labels)
}

func TestSubmitLabelFlag(t *testing.T) {
	fake := &fakeCoordinator{}
	app, _, stderr := testApp(fake.start(t), false)
	require.Equal(t, ExitOK, runApp(app, "submit", "-type", "command", "-label", "gpu=true",
		"-label", "os=linux", "--", "nvidia-smi"), "stderr: %s", stderr)
	require.Len(t, fake.submitted, 1)
	assert.Equal(t, map[string]string{"gpu": "true", "os": "linux"}, fake.submitted[0].Tasks[0].Labels)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no equals", []string{"-label", "gpu"}, `label "gpu" is not name=value`},
		{"twice", []string{"-label", "gpu=true", "-label", "gpu=false"}, `label "gpu" is given twice`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeCoordinator{}
			app, _, stderr := testApp(fake.start(t), false)
			args := append([]string{"submit", "-type", "command"}, tc.args...)
			assert.Equal(t, ExitError, runApp(app, append(args, "--", "true")...))
			assert.Contains(t, stderr.String(), tc.want)
			assert.Empty(t, fake.submitted)
		})
	}

	dir := t.TempDir()
	taskFile := filepath.Join(dir, "tasks.hcl")
	require.NoError(t, os.WriteFile(taskFile, []byte("task \"a\" {\n  type = \"command\"\n  payload = {}\n}\n"),
		0o644))
	app, _, stderr = testApp(fake.start(t), false)
	assert.Equal(t, ExitError, runApp(app, "submit", "-f", taskFile, "-label", "gpu=true"))
	assert.Contains(t, stderr.String(), "-f cannot be combined")
}

func TestWorkerTableStates(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	require.NoError(t, writeWorkerTable(&buf, []api.Worker{
		{ID: "w1", Connected: true, State: api.WorkerDraining, Slots: 1, LastSeen: now},
		{ID: "w2", State: api.WorkerDrained, Slots: 1, LastSeen: now},
	}, now))
	assert.Contains(t, buf.String(), "w1  draining")
	assert.Contains(t, buf.String(), "w2  drained")
}
