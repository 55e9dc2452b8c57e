package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

func TestWriteTaskTable(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, writeTaskTable(&buf, []api.Task{
		{ID: "t1", Name: "unit", Type: "gotest", State: api.StateRunning, Attempt: 2, WorkerID: "worker-1",
			Checkpoint: &api.Checkpoint{Attempt: 1, Sequence: 37, Fraction: 0.617, SizeBytes: 12}},
		{ID: "t22", Name: "lint\tall", Type: "command", State: api.StateQueued,
			QueuedReason: "waiting for a free slot"},
	}))
	want := "" +
		"ID   NAME      TYPE     STATE    ATTEMPT  WORKER    CHECKPOINT    QUEUED_REASON\n" +
		"t1   unit      gotest   running  2        worker-1  1/37 62% 12B  -\n" +
		"t22  lint all  command  queued   0        -         -             waiting for a free slot\n"
	assert.Equal(t, want, buf.String())
}

func TestWriteWorkerTable(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	require.NoError(t, writeWorkerTable(&buf, []api.Worker{
		{ID: "worker-1", Connected: true, Slots: 2, Running: 1, TaskTypes: []string{"command", "gotest"},
			Labels: map[string]string{"os": "linux", "arch": "amd64"}, Connects: 3, Reconnects: 2,
			StateSince: now.Add(-3 * time.Minute), RTTMs: 1.437, DowntimeMs: 2540,
			LastSeen: now.Add(-4 * time.Second), HostVersion: "0.1.0", PluginVersion: "0.2.0",
			Plugins: []api.WorkerPlugin{{Name: "reconnection", Kind: "connector", Version: "0.2.0", APIVersion: 1}}},
		{ID: "worker-2", Slots: 1, LastSeen: now.Add(-90 * time.Minute)},
		{ID: "worker-3", State: api.WorkerDisconnected, StateSince: now.Add(-5 * time.Minute),
			DowntimeMs: 312_400, Slots: 1, LastSeen: now.Add(-5 * time.Minute)},
		{ID: "worker-4", State: api.WorkerDisconnected, StateSince: now.Add(-time.Minute),
			ResumableUntil: now.Add(4 * time.Minute), DowntimeMs: 60_000, Slots: 1, LastSeen: now.Add(-time.Minute)},
	}, now))
	want := "" +
		"ID        STATE         SINCE   RESUMABLE  RTT    RECONNECTS  DOWNTIME  SLOTS  RUNNING  TASK_TYPES      LABELS               LAST_SEEN  VERSION                   PLUGINS\n" +
		"worker-1  connected     3m ago  -          1.4ms  2           2.5s      2      1        command,gotest  arch=amd64,os=linux  4s ago     host 0.1.0, plugin 0.2.0  reconnection 0.2.0/api1\n" +
		"worker-2  disconnected  -       -          -      0           0s        1      0        -               -                    1h30m ago  -                         -\n" +
		"worker-3  disconnected  5m ago  -          -      0           5m12s     1      0        -               -                    5m ago     -                         -\n" +
		"worker-4  disconnected  1m ago  for 4m0s   -      0           1m0s      1      0        -               -                    1m ago     -                         -\n"
	assert.Equal(t, want, buf.String())
}

func TestFormatAge(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	cases := []struct {
		age  time.Duration
		want string
	}{
		{0, "just now"},
		{4 * time.Second, "4s ago"},
		{3 * time.Minute, "3m ago"},
		{3*time.Hour + 12*time.Minute, "3h12m ago"},
		{72 * time.Hour, "2025-12-30 15:00 UTC"},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, formatAge(now.Add(-tc.age), now), "age %s", tc.age)
	}
	assert.Equal(t, "never", formatAge(time.Time{}, now))
}

func TestTasksCommand(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{{task("t1", api.StateQueued)}}}
	addr := fake.start(t)

	app, stdout, _ := testApp(addr, false)
	require.Equal(t, ExitOK, runApp(app, "tasks", "-batch", "b1"))
	assert.True(t, strings.HasPrefix(stdout.String(), "ID  NAME     TYPE     STATE"))

	app, stdout, _ = testApp(addr, false)
	require.Equal(t, ExitOK, runApp(app, "tasks", "--output", "json"))
	assert.Contains(t, stdout.String(), `"id": "t1"`)

	app, _, stderr := testApp(addr, false)
	assert.Equal(t, ExitError, runApp(app, "tasks", "-state", "done"))
	assert.Contains(t, stderr.String(), `invalid -state "done"`)

	app, _, stderr = testApp(addr, false)
	assert.Equal(t, ExitError, runApp(app, "tasks", "-output", "yaml"))
	assert.Contains(t, stderr.String(), `invalid -output "yaml"`)
}

func TestWorkersForget(t *testing.T) {
	fake := &fakeCoordinator{workers: []api.Worker{{ID: "gone"}, {ID: "here", Connected: true}}}
	app, stdout, stderr := testApp(fake.start(t), false)
	assert.Equal(t, ExitError, runApp(app, "workers", "forget", "gone", "here", "nobody"))
	assert.Equal(t, "forgot worker gone\n", stdout.String())
	assert.Contains(t, stderr.String(), "forget worker here:")
	assert.Contains(t, stderr.String(), "worker is connected")
	assert.Contains(t, stderr.String(), "forget worker nobody:")
	assert.Contains(t, stderr.String(), "worker not found")
	require.Len(t, fake.workers, 1)
	assert.Equal(t, "here", fake.workers[0].ID)

	app, _, stderr = testApp(fake.start(t), false)
	assert.Equal(t, ExitError, runApp(app, "workers", "forget"))
	assert.Contains(t, stderr.String(), "workers forget needs at least one worker id; list them with dtf workers")
}

func TestWorkersCommand(t *testing.T) {
	fake := &fakeCoordinator{workers: []api.Worker{{ID: "worker-1", Connected: true, Slots: 2}}}
	app, stdout, _ := testApp(fake.start(t), false)
	require.Equal(t, ExitOK, runApp(app, "workers"))
	assert.Contains(t, stdout.String(), "worker-1  connected")

	app, stdout, _ = testApp(fake.start(t), false)
	require.Equal(t, ExitOK, runApp(app, "workers", "-output", "json"))
	assert.Contains(t, stdout.String(), `"id": "worker-1"`)
}

func TestCancelCommand(t *testing.T) {
	fake := &fakeCoordinator{}
	app, stdout, stderr := testApp(fake.start(t), false)
	assert.Equal(t, ExitError, runApp(app, "cancel", "t1", "done", "t2"))
	assert.Equal(t, "t1 cancelled\nt2 cancelled\n", stdout.String())
	assert.Contains(t, stderr.String(), "cancel done: the task already ended")
}

func TestSubmitCommand(t *testing.T) {
	dir := t.TempDir()
	taskFile := filepath.Join(dir, "tasks.hcl")
	require.NoError(t, os.WriteFile(taskFile, []byte(
		"task \"a\" {\n  type = \"command\"\n  payload = { argv = [\"true\"] }\n}\n"), 0o644))

	cases := []struct {
		name    string
		args    []string
		payload string
		batch   string
	}{
		{"task file", []string{"-f", taskFile, "-batch", "nightly"}, `{"argv":["true"]}`, "nightly"},
		{"command argv", []string{"-type", "command", "-name", "x", "--", "echo", "hi"},
			`{"argv":["echo","hi"]}`, ""},
		{"gotest packages", []string{"-type", "gotest", "-dir", dir, "--", "./..."},
			`{"dir":"` + dir + `","packages":["./..."]}`, ""},
		{"payload flag", []string{"-type", "other", "-payload", `{"k":1}`, "-timeout", "5m"},
			`{"k":1}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeCoordinator{}
			app, stdout, stderr := testApp(fake.start(t), false)
			require.Equal(t, ExitOK, runApp(app, append([]string{"submit"}, tc.args...)...),
				"stderr: %s", stderr)
			require.Len(t, fake.submitted, 1)
			assert.Equal(t, tc.batch, fake.submitted[0].Batch)
			assert.JSONEq(t, tc.payload, string(fake.submitted[0].Tasks[0].Payload))
			assert.Contains(t, stdout.String(), "submitted 1 tasks in batch b1")
		})
	}
}

func TestSubmitCommandErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "give a task file with -f FILE or a task with -type TYPE"},
		{"command without argv", []string{"-type", "command"}, "a command task needs its argv"},
		{"args for other type", []string{"-type", "other", "--", "x"}, `only taken by -type command`},
		{"bad payload", []string{"-type", "other", "-payload", "[1]"}, "invalid -payload"},
		{"bad timeout", []string{"-type", "command", "-timeout", "5", "--", "true"}, `timeout "5" is not a duration`},
		{"file and type", []string{"-f", "x.hcl", "-type", "command"}, "-f cannot be combined"},
		{"missing file", []string{"-f", "/nonexistent/tasks.hcl"}, "/nonexistent/tasks.hcl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeCoordinator{}
			app, _, stderr := testApp(fake.start(t), false)
			assert.Equal(t, ExitError, runApp(app, append([]string{"submit"}, tc.args...)...))
			assert.Contains(t, stderr.String(), tc.want)
			assert.Empty(t, fake.submitted)
		})
	}
}

func TestGlobalAddrFlag(t *testing.T) {
	fake := &fakeCoordinator{workers: []api.Worker{{ID: "worker-9"}}}
	addr := fake.start(t)
	app, stdout, stderr := testApp("http://127.0.0.1:1", false)
	require.Equal(t, ExitOK, runApp(app, "-addr", addr, "workers"), "stderr: %s", stderr)
	assert.Contains(t, stdout.String(), "worker-9")
}

func TestUsageAndVersion(t *testing.T) {
	app, _, stderr := testApp("", false)
	assert.Equal(t, ExitError, runApp(app))
	assert.Contains(t, stderr.String(), "Usage: dtf [-addr URL] COMMAND")

	app, _, stderr = testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "frobnicate"))
	assert.Contains(t, stderr.String(), `unknown command "frobnicate"`)

	app, stdout, _ := testApp("", false)
	assert.Equal(t, ExitOK, runApp(app, "version"))
	assert.True(t, strings.HasPrefix(stdout.String(), "dtf "+Version+" (go"))

	app, _, _ = testApp("", false)
	assert.Equal(t, ExitOK, runApp(app, "tasks", "-h"))
}

func TestWorkerCommandErrors(t *testing.T) {
	app, _, stderr := testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "worker"))
	assert.Contains(t, stderr.String(), "worker needs -config FILE")

	missing := filepath.Join(t.TempDir(), "worker.hcl")
	app, _, stderr = testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "worker", "-config", missing, "-worker-id", "w9"))
	assert.Contains(t, stderr.String(), missing)
}

// TestWorkerCommandEmptyFlags checks that a flag set to an empty value, as
// -worker-id "$ID" with ID unset gives, is an error and not a silent
// fallback to the config file.
func TestWorkerCommandEmptyFlags(t *testing.T) {
	for _, args := range [][]string{
		{"worker", "-config", "worker.hcl", "-worker-id="},
		{"worker", "-config", "worker.hcl", "-data-dir", ""},
		{"worker", "-config", "worker.hcl", "-url", " "},
		{"worker", "-config="},
		{"worker", "reload", "-config", "worker.hcl", "-data-dir="},
	} {
		app, _, stderr := testApp("", false)
		assert.Equal(t, ExitError, runApp(app, args...), "%q", args)
		assert.Contains(t, stderr.String(), ": the value is empty; give ", "%q", args)
	}

	app, _, stderr := testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "worker", "-config", "worker.hcl", "-worker-id="))
	assert.Equal(t, "dtf: invalid -worker-id: the value is empty; give a worker id, or leave the flag out "+
		"to use coordinator.worker_id of the file\n", stderr.String())
}

func TestCoordinatorGCSetting(t *testing.T) {
	env := map[string]string{}
	getenv := func(key string) string { return env[key] }
	percent, set := coordinatorGCSetting(getenv)
	assert.True(t, set, "without GOGC the coordinator sets its own default")
	assert.Equal(t, coordinatorGCPercent, percent)

	env["GOGC"] = "200"
	_, set = coordinatorGCSetting(getenv)
	assert.False(t, set, "a GOGC from the environment is left alone")
}
