package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
  replay_frames      = 128
  replay_bytes       = 1048576
  session_ttl        = "2m"
  max_heartbeat_timeout = "20s"
  max_sessions_per_second = 50
  session_burst      = 70
  max_pending_handshakes = 90
  compression        = false
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
	assert.Equal(t, 128, cfg.Workers.ReplayFrames)
	assert.Equal(t, 1<<20, cfg.Workers.ReplayBytes)
	assert.Equal(t, 2*time.Minute, cfg.Workers.SessionTTL)
	assert.Equal(t, 20*time.Second, cfg.Workers.MaxHeartbeatTimeout)
	assert.Equal(t, 50, cfg.Workers.MaxSessionsPerSecond)
	assert.Equal(t, 70, cfg.Workers.SessionBurst)
	assert.Equal(t, 90, cfg.Workers.MaxPendingHandshakes)
	assert.False(t, cfg.Workers.Compression)
}

// TestLoadLimitsInclusive loads files with every bounded setting at the
// low end and at the high end of its range.
func TestLoadLimitsInclusive(t *testing.T) {
	cases := []struct {
		name string
		text string
	}{
		{"low end", `
max_attempts      = 1
max_body_bytes    = 1024
shutdown_timeout  = "100ms"
schedule_interval = "10ms"
workers {
  heartbeat_interval      = "50ms"
  heartbeat_timeout       = "150ms"
  reassign_after          = "0s"
  handshake_timeout       = "10ms"
  max_frame_bytes         = 1024
  send_queue              = 1
  replay_frames           = 1
  replay_bytes            = 1024
  session_ttl             = "0s"
  max_sessions_per_second = 1
  session_burst           = 1
  max_pending_handshakes  = 1
}
`},
		{"high end", `
max_attempts      = 100
max_body_bytes    = 67108864
shutdown_timeout  = "1h"
schedule_interval = "1m"
workers {
  heartbeat_interval      = "1m"
  heartbeat_timeout       = "10m"
  reassign_after          = "24h"
  handshake_timeout       = "5m"
  max_frame_bytes         = 16777216
  send_queue              = 65536
  replay_frames           = 1048576
  replay_bytes            = 268435456
  session_ttl             = "24h"
  max_heartbeat_timeout   = "40m"
  max_sessions_per_second = 100000
  session_burst           = 100000
  max_pending_handshakes  = 65536
}
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tc.text))
			assert.NoError(t, err)
		})
	}
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
		// absent are substrings the error must not contain.
		absent []string
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
			want: []string{"coordinator.hcl:1:16", "max_attempts 0 is too small; use 1 to 100, default 3"},
		},
		{
			name: "max attempts too large",
			text: "max_attempts = 101\n",
			want: []string{"coordinator.hcl:1:16", "max_attempts 101 is too large; use 1 to 100"},
		},
		{
			name: "body limit too large",
			text: "max_body_bytes = 9223372036854775807\n",
			want: []string{"coordinator.hcl:1:18", "max_body_bytes 9223372036854775807 is too large; use 1024 to 67108864"},
		},
		{
			name: "send queue too large",
			text: "workers {\n  send_queue = 9223372036854775807\n}\n",
			want: []string{"coordinator.hcl:2:16", "Invalid workers.send_queue",
				"workers.send_queue 9223372036854775807 is too large; use 1 to 65536, default 256"},
		},
		{
			name: "send queue beyond int64",
			text: "workers {\n  send_queue = 1e30\n}\n",
			want: []string{"coordinator.hcl:2:16", "workers.send_queue 1000000000000000000000000000000 is too large"},
		},
		{
			name: "send queue zero",
			text: "workers {\n  send_queue = 0\n}\n",
			want: []string{"coordinator.hcl:2:16", "workers.send_queue 0 is too small; use 1 to 65536"},
		},
		{
			name: "send queue fraction",
			text: "workers {\n  send_queue = 1.5\n}\n",
			want: []string{"coordinator.hcl:2:16", "workers.send_queue must be a whole number from 1 to 65536"},
		},
		{
			name: "send queue not a number",
			text: "workers {\n  send_queue = \"many\"\n}\n",
			want: []string{"coordinator.hcl:2:16", "workers.send_queue must be a whole number"},
		},
		{
			name: "replay frames too large",
			text: "workers {\n  replay_frames = 9223372036854775807\n}\n",
			want: []string{"coordinator.hcl:2:19", "workers.replay_frames 9223372036854775807 is too large; use 1 to 1048576"},
		},
		{
			name: "replay bytes too large",
			text: "workers {\n  replay_bytes = 9223372036854775807\n}\n",
			want: []string{"coordinator.hcl:2:18", "workers.replay_bytes 9223372036854775807 is too large; use 1024 to 268435456"},
		},
		{
			name:   "frame limit too large",
			text:   "workers {\n  max_frame_bytes = 9223372036854775807\n}\n",
			want:   []string{"coordinator.hcl:2:21", "workers.max_frame_bytes 9223372036854775807 is too large; use 1024 to 16777216"},
			absent: []string{"replay_bytes"},
		},
		{
			name: "replay bytes below frame limit",
			text: "workers {\n  max_frame_bytes = 8388608\n  replay_bytes = 4194304\n}\n",
			want: []string{"workers.replay_bytes 4194304 is smaller than workers.max_frame_bytes 8388608"},
		},
		{
			name: "pending handshakes too large",
			text: "workers {\n  max_pending_handshakes = 9223372036854775807\n}\n",
			want: []string{"coordinator.hcl:2:28", "workers.max_pending_handshakes 9223372036854775807 is too large; use 1 to 65536"},
		},
		{
			name: "session rate too large",
			text: "workers {\n  max_sessions_per_second = 9223372036854775807\n}\n",
			want: []string{"coordinator.hcl:2:29", "workers.max_sessions_per_second 9223372036854775807 is too large; use 1 to 100000"},
		},
		{
			name: "session burst too large",
			text: "workers {\n  session_burst = 9223372036854775807\n}\n",
			want: []string{"coordinator.hcl:2:19", "workers.session_burst 9223372036854775807 is too large; use 1 to 100000"},
		},
		{
			name: "heartbeat interval of a nanosecond",
			text: "workers {\n  heartbeat_interval = \"1ns\"\n}\n",
			want: []string{"coordinator.hcl:2:24", "Duration out of range",
				`workers.heartbeat_interval "1ns" is too short; use "50ms" to "1m"`},
		},
		{
			name: "heartbeat interval too long",
			text: "workers {\n  heartbeat_interval = \"2m\"\n  heartbeat_timeout = \"6m\"\n}\n",
			want: []string{"coordinator.hcl:2:24", `workers.heartbeat_interval "2m" is too long; use "50ms" to "1m"`},
		},
		{
			name: "heartbeat timeout too short",
			text: "workers {\n  heartbeat_interval = \"50ms\"\n  heartbeat_timeout = \"100ms\"\n}\n",
			want: []string{"coordinator.hcl:3:23", `workers.heartbeat_timeout "100ms" is too short; use "150ms" to "10m"`},
		},
		{
			name: "heartbeat timeout too long",
			text: "workers {\n  heartbeat_timeout = \"1h\"\n}\n",
			want: []string{"coordinator.hcl:2:23", `workers.heartbeat_timeout "1h" is too long; use "150ms" to "10m"`},
		},
		{
			name:   "duration beyond time.Duration",
			text:   "shutdown_timeout = \"100000000h\"\n",
			want:   []string{"coordinator.hcl:1:20", `shutdown_timeout "100000000h" is too large; use at most "1h"`},
			absent: []string{"time: invalid duration"},
		},
		{
			name: "reassign after too long",
			text: "workers {\n  reassign_after = \"48h\"\n}\n",
			want: []string{"coordinator.hcl:2:20", `workers.reassign_after "48h" is too long; use "0s" to "24h"`},
		},
		{
			name: "schedule interval too short",
			text: "schedule_interval = \"1ns\"\n",
			want: []string{"coordinator.hcl:1:21", `schedule_interval "1ns" is too short; use "10ms" to "1m"`},
		},
		{
			name:   "listen port out of range",
			text:   "listen = \"127.0.0.1:99999\"\n",
			want:   []string{"coordinator.hcl", `listen "127.0.0.1:99999" has an invalid port "99999"; use a port from 0 to 65535`},
			absent: []string{"stop the process"},
		},
		{
			name: "listen port not a number",
			text: "listen = \"127.0.0.1:http\"\n",
			want: []string{`listen "127.0.0.1:http" has an invalid port "http"`},
		},
		{
			name: "listen without port",
			text: "listen = \"127.0.0.1\"\n",
			want: []string{`listen "127.0.0.1" is not host:port`},
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
			for _, absent := range tc.absent {
				assert.NotContains(t, err.Error(), absent)
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

// TestValidateCodeBuilt checks the rules that hold for a configuration
// built in code, which does not pass through Load's range checks.
func TestValidateCodeBuilt(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   []string
		absent []string
	}{
		{
			name:   "frame limit too large",
			change: func(c *Config) { c.Workers.MaxFrameBytes = 1 << 40 },
			want:   []string{"workers.max_frame_bytes 1099511627776 is too large; use 1024 to 16777216"},
			absent: []string{"replay_bytes"},
		},
		{
			name:   "send queue too large",
			change: func(c *Config) { c.Workers.SendQueue = 1 << 20 },
			want:   []string{"workers.send_queue 1048576 is too large; use 1 to 65536"},
		},
		{
			name:   "session burst zero",
			change: func(c *Config) { c.Workers.SessionBurst = 0 },
			want:   []string{"workers.session_burst 0 is too small"},
		},
		{
			name:   "heartbeat below a millisecond",
			change: func(c *Config) { c.Workers.HeartbeatInterval = time.Nanosecond },
			want:   []string{"workers.heartbeat_interval 1ns is too short; use at least 1ms, default 2s"},
		},
		{
			name:   "listen port out of range",
			change: func(c *Config) { c.Listen = "127.0.0.1:65536" },
			want:   []string{`listen "127.0.0.1:65536" has an invalid port "65536"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default("127.0.0.1:0", t.TempDir())
			tc.change(cfg)
			err := cfg.Validate()
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
			for _, absent := range tc.absent {
				assert.NotContains(t, err.Error(), absent)
			}
		})
	}
}

// TestValidateShortHeartbeatInCode checks that a configuration built in
// code may use heartbeats shorter than a file allows, down to the
// millisecond that Welcome can carry.
func TestValidateShortHeartbeatInCode(t *testing.T) {
	cfg := Default("127.0.0.1:0", t.TempDir())
	cfg.Workers.HeartbeatInterval = time.Millisecond
	cfg.Workers.HeartbeatTimeout = 10 * time.Millisecond
	assert.NoError(t, cfg.Validate())
}

// TestLoadErrorsInFileOrder checks that errors are listed in the order of
// the file, so the setting that a user changed leads the message even when
// the decoder checks another setting first.
func TestLoadErrorsInFileOrder(t *testing.T) {
	path := writeConfig(t, "workers {\n  max_frame_bytes = 9223372036854775807\n  heartbeat_interval = \"1ns\"\n}\n")
	_, err := Load(path)
	require.Error(t, err)

	frame := strings.Index(err.Error(), "coordinator.hcl:2:21: Invalid workers.max_frame_bytes")
	heartbeat := strings.Index(err.Error(), "coordinator.hcl:3:24: Duration out of range")
	require.NotEqual(t, -1, frame, err.Error())
	require.NotEqual(t, -1, heartbeat, err.Error())
	assert.Less(t, frame, heartbeat, "the error of line 2 comes before the error of line 3")
}
