package config

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "coordinator.hcl")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

func TestLoadDefaults(t *testing.T) {
	path := writeConfig(t, "")
	cfg, err := Load(path)
	require.NoError(t, err)

	assert.Equal(t, path, cfg.File)
	assert.Equal(t, DefaultListen, cfg.Listen)
	assert.Equal(t, filepath.Join(filepath.Dir(path), DefaultDataDir), cfg.DataDir)
	assert.Equal(t, "info", cfg.LogLevel)
	assert.Equal(t, []string{"command", "gotest"}, cfg.TaskTypes)
	assert.Equal(t, 3, cfg.MaxAttempts)
	assert.Equal(t, 10*time.Second, cfg.ShutdownTimeout)
	assert.Equal(t, time.Second, cfg.ScheduleInterval)
	assert.False(t, cfg.Insecure)
	assert.Equal(t, 4<<20, cfg.MaxBodyBytes)
	assert.Empty(t, cfg.Workers.Token)
	assert.Equal(t, 2*time.Second, cfg.Workers.HeartbeatInterval)
	assert.Equal(t, 6*time.Second, cfg.Workers.HeartbeatTimeout)
	assert.Equal(t, 30*time.Second, cfg.Workers.ReassignAfter)
	assert.Equal(t, 10*time.Second, cfg.Workers.HandshakeTimeout)
	assert.Equal(t, DefaultMaxFrameBytes, cfg.Workers.MaxFrameBytes)
	assert.Equal(t, DefaultSendQueue, cfg.Workers.SendQueue)
}

func TestLoadFullFile(t *testing.T) {
	t.Setenv("DTF_TEST_TOKEN", "s3cret")
	path := writeConfig(t, `
listen     = "0.0.0.0:7071"
insecure   = true
max_body_bytes = 1048576
data_dir   = "../state"
log_level  = "debug"
task_types = ["command"]
max_attempts = 5
shutdown_timeout = "3s"
schedule_interval = "250ms"
workers {
  token              = env("DTF_TEST_TOKEN")
  heartbeat_interval = "1s"
  heartbeat_timeout  = "4s"
  reassign_after     = "1m"
  handshake_timeout  = "2s"
  max_frame_bytes    = 65536
  send_queue         = 16
}
`)
	cfg, err := Load(path)
	require.NoError(t, err)

	assert.Equal(t, "0.0.0.0:7071", cfg.Listen)
	assert.True(t, cfg.Insecure)
	assert.Equal(t, 1<<20, cfg.MaxBodyBytes)
	assert.Equal(t, filepath.Join(filepath.Dir(filepath.Dir(path)), "state"), cfg.DataDir)
	assert.Equal(t, "debug", cfg.LogLevel)
	assert.Equal(t, []string{"command"}, cfg.TaskTypes)
	assert.Equal(t, 5, cfg.MaxAttempts)
	assert.Equal(t, 3*time.Second, cfg.ShutdownTimeout)
	assert.Equal(t, 250*time.Millisecond, cfg.ScheduleInterval)
	assert.Equal(t, "s3cret", cfg.Workers.Token)
	assert.Equal(t, time.Second, cfg.Workers.HeartbeatInterval)
	assert.Equal(t, 4*time.Second, cfg.Workers.HeartbeatTimeout)
	assert.Equal(t, time.Minute, cfg.Workers.ReassignAfter)
	assert.Equal(t, 2*time.Second, cfg.Workers.HandshakeTimeout)
	assert.Equal(t, 65536, cfg.Workers.MaxFrameBytes)
	assert.Equal(t, 16, cfg.Workers.SendQueue)
}

func TestLoadShippedConfig(t *testing.T) {
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	path := filepath.Join(filepath.Dir(file), "..", "..", "configs", "coordinator.hcl")
	t.Setenv("DTF_WORKER_TOKEN", "")

	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:7070", cfg.Listen)
	assert.Equal(t, 30*time.Second, cfg.Workers.ReassignAfter)
	assert.True(t, filepath.IsAbs(cfg.DataDir))
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string
	}{
		{
			name: "malformed hcl",
			text: "listen = \"127.0.0.1:7070\"\nworkers {\n",
			want: []string{"invalid coordinator config", "coordinator.hcl:2:", "workers {"},
		},
		{
			name: "malformed value",
			text: "listen = \"127.0.0.1:7070\"\nlog_level = = \"info\"\n",
			want: []string{"coordinator.hcl:2:13", "log_level = = \"info\""},
		},
		{
			name: "unknown top-level field",
			text: "listen = \"127.0.0.1:7070\"\nlisten_port = 7070\n",
			want: []string{"coordinator.hcl:2:1", "listen_port", "Unsupported argument"},
		},
		{
			name: "unknown field in workers",
			text: "workers {\n  heartbeat = \"2s\"\n}\n",
			want: []string{"coordinator.hcl:2:3", "heartbeat = \"2s\"", "Unsupported argument"},
		},
		{
			name: "duration string without unit",
			text: "shutdown_timeout = \"30\"\n",
			want: []string{"coordinator.hcl:1:20", `add a unit such as "30s"`, "shutdown_timeout = \"30\""},
		},
		{
			name: "duration number without unit",
			text: "workers {\n  reassign_after = 30\n}\n",
			want: []string{"coordinator.hcl:2:20", `add a unit such as "30s"`},
		},
		{
			name: "invalid duration",
			text: "workers {\n  heartbeat_timeout = \"soon\"\n}\n",
			want: []string{"coordinator.hcl:2:", `Invalid duration "soon"`},
		},
		{
			name: "two errors reported together",
			text: "shutdown_timeout = \"5\"\nschedule_interval = \"7\"\n",
			want: []string{"coordinator.hcl:1:", "coordinator.hcl:2:", `"5s"`, `"7s"`},
		},
		{
			name: "timeout not longer than interval",
			text: "workers {\n  heartbeat_interval = \"5s\"\n  heartbeat_timeout = \"5s\"\n}\n",
			want: []string{"heartbeat_timeout 5s must be longer"},
		},
		{
			name: "public listener without insecure",
			text: "listen = \"0.0.0.0:7070\"\nworkers {\n  token = \"t\"\n}\n",
			want: []string{`listen "0.0.0.0:7070" is not a loopback address`, "set insecure = true",
				"listen on 127.0.0.1:7070"},
		},
		{
			name: "public listener without token",
			text: "listen = \"0.0.0.0:7070\"\ninsecure = true\n",
			want: []string{"not a loopback address", "workers.token is empty"},
		},
		{
			name: "all addresses without insecure",
			text: "listen = \":7070\"\nworkers {\n  token = \"t\"\n}\n",
			want: []string{`listen ":7070" is not a loopback address`, "set insecure = true"},
		},
		{
			name: "task type with upper case",
			text: "task_types = [\"GoTest\"]\n",
			want: []string{`task_types[0] "GoTest" is invalid`},
		},
		{
			name: "task type listed twice",
			text: "task_types = [\"command\", \"command\"]\n",
			want: []string{`task_types[1] "command" is listed twice`},
		},
		{
			name: "body limit too small",
			text: "max_body_bytes = 10\n",
			want: []string{"max_body_bytes 10 is too small"},
		},
		{
			name: "unknown block",
			text: "store {\n}\n",
			want: []string{"coordinator.hcl:1:1", "Unsupported block type"},
		},
		{
			name: "unknown function",
			text: "log_level = lower(\"INFO\")\n",
			want: []string{"coordinator.hcl:1:13", "Call to unknown function"},
		},
		{
			name: "bad log level",
			text: "log_level = \"loud\"\n",
			want: []string{`log_level "loud" is invalid`},
		},
		{
			name: "max attempts zero",
			text: "max_attempts = 0\n",
			want: []string{"max_attempts 0 is out of range"},
		},
		{
			name: "empty task types",
			text: "task_types = []\n",
			want: []string{"task_types is empty"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tc.text))
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.hcl"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "absent.hcl")
}

func TestLoadDiagnosticsError(t *testing.T) {
	_, err := Load(writeConfig(t, "shutdown_timeout = \"30\"\n"))
	require.Error(t, err)

	var diagErr *DiagnosticsError
	require.ErrorAs(t, err, &diagErr)
	require.Len(t, diagErr.Diagnostics, 1)
	diag := diagErr.Diagnostics[0]
	assert.Equal(t, "Invalid duration", diag.Summary)
	require.NotNil(t, diag.Subject)
	assert.Equal(t, 1, diag.Subject.Start.Line)
	assert.Equal(t, 20, diag.Subject.Start.Column)
	assert.Contains(t, err.Error(), `1: shutdown_timeout = "30"`, "the message shows the source line")
}

func TestLoadEnvFunction(t *testing.T) {
	t.Setenv("DTF_TEST_LEVEL", "debug")
	t.Setenv("DTF_TEST_UNSET", "")
	path := writeConfig(t, "log_level = env(\"DTF_TEST_LEVEL\")\nworkers {\n  token = env(\"DTF_TEST_UNSET\")\n}\n")

	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, "debug", cfg.LogLevel)
	assert.Empty(t, cfg.Workers.Token)
}

func TestLoadAbsoluteDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Load(writeConfig(t, "data_dir = \""+filepath.ToSlash(dir)+"\"\n"))
	require.NoError(t, err)
	assert.Equal(t, dir, cfg.DataDir)
}

func TestValidateLoopbackListeners(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:7070", "[::1]:7070", "localhost:7070", "127.0.0.2:0"} {
		t.Run(listen, func(t *testing.T) {
			assert.NoError(t, Default(listen, t.TempDir()).Validate())
		})
	}
}
