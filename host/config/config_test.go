package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol"
)

// writeWorkerConfig writes body as worker.hcl in a temporary folder that
// also contains executable stand-ins for the plugin binaries under bin/.
func writeWorkerConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	for _, name := range []string{"dtf-reconnection", "dtf-exec-command", "dtf-exec-gotest"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", name), []byte("#!/bin/sh\n"), 0o755))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "configs"), 0o755))
	path := filepath.Join(dir, "configs", "worker.hcl")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	return path
}

const validConfig = `
data_dir  = "../data/worker-1"
slots     = 2
log_level = "info"
labels    = { os = "linux" }
coordinator {
  url       = "ws://127.0.0.1:7070"
  worker_id = "worker-1"
  token     = env("DTF_TEST_WORKER_TOKEN")
}
plugin "reconnection" {
  kind = "connector"
  path = "../bin/dtf-reconnection"
  start_timeout = "10s"
  env  = []
  config {
    heartbeat_interval = "2s"
    backoff_multiplier = 2
    nested             = { a = [1, 2] }
  }
}
plugin "command" {
  kind = "executor"
  path = "../bin/dtf-exec-command"
  env  = ["PATH", "HOME"]
}
`

func TestLoadValid(t *testing.T) {
	t.Setenv("DTF_TEST_WORKER_TOKEN", "s3cret")
	path := writeWorkerConfig(t, validConfig)
	root := filepath.Dir(filepath.Dir(path))

	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, path, cfg.File)
	assert.Equal(t, filepath.Join(root, "data", "worker-1"), cfg.DataDir)
	assert.Equal(t, 2, cfg.Slots)
	assert.Equal(t, map[string]string{"os": "linux", "arch": runtime.GOARCH}, cfg.Labels)
	assert.Equal(t, DefaultShutdownTimeout, cfg.ShutdownTimeout)
	assert.Equal(t, DefaultDrainTimeout, cfg.DrainTimeout)
	assert.Equal(t, DefaultRestartBackoffBase, cfg.RestartBackoffBase)
	assert.Equal(t, DefaultRestartBackoffCap, cfg.RestartBackoffCap)
	assert.Equal(t, "s3cret", cfg.Coordinator.Token)
	assert.Equal(t, "worker-1", cfg.Coordinator.WorkerID)

	connector := cfg.Connector()
	assert.Equal(t, "reconnection", connector.Name)
	assert.Equal(t, filepath.Join(root, "bin", "dtf-reconnection"), connector.Path)
	assert.Equal(t, 10*time.Second, connector.StartTimeout)
	assert.JSONEq(t, `{"heartbeat_interval":"2s","backoff_multiplier":2,"nested":{"a":[1,2]}}`,
		string(connector.ConfigJSON))

	executors := cfg.Executors()
	require.Len(t, executors, 1)
	assert.Equal(t, "command", executors[0].Name)
	assert.JSONEq(t, `{}`, string(executors[0].ConfigJSON))
	assert.Equal(t, []string{"PATH", "HOME"}, executors[0].Env)
}

func TestLoadShippedConfig(t *testing.T) {
	// The shipped file refers to ../bin, which exists only after make build,
	// so this checks that everything but the binaries is valid.
	_, err := Load(filepath.Join("..", "..", "configs", "worker.hcl"))
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if strings.HasPrefix(line, "Error: ") {
				assert.Equal(t, "Error: Invalid plugin path", line)
			}
		}
	}
}

func TestEnviron(t *testing.T) {
	p := Plugin{Env: []string{"A", "UNSET", "B"}}
	lookup := func(name string) (string, bool) {
		values := map[string]string{"A": "1", "B": "x=y"}
		v, ok := values[name]
		return v, ok
	}
	assert.Equal(t, []string{"A=1", "B=x=y"}, p.Environ(lookup))
}

func TestLoadErrors(t *testing.T) {
	replace := func(old, new string) string {
		require.Contains(t, validConfig, old)
		return strings.Replace(validConfig, old, new, 1)
	}
	tests := []struct {
		name string
		body string
		// want are substrings of the error, in order of importance.
		want []string
	}{
		{"malformed", replace(`slots     = 2`, `slots     = `), []string{"worker.hcl:3:13: Invalid expression", "slots     ="}},
		{"unknown field", replace(`slots     = 2`, "slots     = 2\nslot_count = 3"),
			[]string{"worker.hcl:4:1: Unsupported argument", "Unsupported argument", "slot_count = 3"}},
		{"missing unit", replace(`start_timeout = "10s"`, `start_timeout = "10"`),
			[]string{"worker.hcl:14:19: Invalid duration", `start_timeout "10" has no unit`, `start_timeout = "10"`}},
		{"bad duration", replace(`start_timeout = "10s"`, `start_timeout = "soon"`),
			[]string{"worker.hcl:14:19", "is not a duration"}},
		{"zero slots", replace(`slots     = 2`, `slots     = 0`), []string{"worker.hcl:3:13", "slots 0 is too small; use 1 to 1024"}},
		{"label name with =", replace(`labels    = { os = "linux" }`, `labels    = { "a=b" = "c" }`),
			[]string{"worker.hcl:", "Invalid labels", `label name "a=b" contains '='`}},
		{"too many slots", replace(`slots     = 2`, `slots     = 1000000000`),
			[]string{"worker.hcl:3:13: Invalid slots", "slots 1000000000 is too large; use 1 to 1024"}},
		{"slots beyond int64", replace(`slots     = 2`, `slots     = 1e30`),
			[]string{"worker.hcl:3:13", "slots 1000000000000000000000000000000 is too large; use 1 to 1024"}},
		{"fractional slots", replace(`slots     = 2`, `slots     = 1.5`),
			[]string{"worker.hcl:3:13", "slots must be a whole number from 1 to 1024"}},
		{"slots as word", replace(`slots     = 2`, `slots     = "two"`),
			[]string{"worker.hcl:3:13", "slots must be a whole number from 1 to 1024"}},
		{"start timeout too long", replace(`start_timeout = "10s"`, `start_timeout = "1h"`),
			[]string{"worker.hcl:14:19", `start_timeout "1h" is too long; use at most "10m", default "10s"`}},
		{"start timeout beyond time.Duration", replace(`start_timeout = "10s"`, `start_timeout = "100000000h"`),
			[]string{"worker.hcl:14:19", `start_timeout "100000000h" is too large; use at most "10m"`}},
		{"shutdown timeout too long", replace(`log_level = "info"`, "log_level = \"info\"\nshutdown_timeout = \"2h\""),
			[]string{"worker.hcl:5:20", `shutdown_timeout "2h" is too long; use at most "1h", default "10s"`}},
		{"drain timeout too long", replace(`log_level = "info"`, "log_level = \"info\"\ndrain_timeout = \"25h\""),
			[]string{"worker.hcl:5:17", `drain_timeout "25h" is too long; use at most "24h", default "20s"`}},
		{"drain timeout zero", replace(`log_level = "info"`, "log_level = \"info\"\ndrain_timeout = \"0s\""),
			[]string{"worker.hcl:5:17", `drain_timeout must be positive, got "0s"`}},
		{"restart backoff base too short", replace(`log_level = "info"`,
			"log_level = \"info\"\nrestart_backoff_base = \"1ms\""),
			[]string{"worker.hcl:5:24", `restart_backoff_base "1ms" is too short; use at least "10ms", default "500ms"`}},
		{"restart backoff cap below base", replace(`log_level = "info"`,
			"log_level = \"info\"\nrestart_backoff_base = \"2s\"\nrestart_backoff_cap = \"1s\""),
			[]string{"worker.hcl:6:23", "restart_backoff_cap 1s is below restart_backoff_base 2s"}},
		{"restart backoff base above default cap", replace(`log_level = "info"`,
			"log_level = \"info\"\nrestart_backoff_base = \"1m\""),
			[]string{"worker.hcl:5:24", "restart_backoff_cap 30s is below restart_backoff_base 1m"}},
		{"restart backoff cap too long", replace(`log_level = "info"`,
			"log_level = \"info\"\nrestart_backoff_cap = \"2h\""),
			[]string{"worker.hcl:5:23", `restart_backoff_cap "2h" is too long; use at most "1h", default "30s"`}},
		{"bad url", replace(`ws://127.0.0.1:7070`, `ftp://127.0.0.1:7070`),
			[]string{"worker.hcl:7:15", "Invalid coordinator url", "scheme must be"}},
		{"empty worker id", replace(`worker_id = "worker-1"`, `worker_id = ""`),
			[]string{"worker.hcl:8:15", "worker_id is empty"}},
		{"worker id with a newline", replace(`worker_id = "worker-1"`, `worker_id = "worker\n1"`),
			[]string{"worker.hcl:8:15", `has the character '\n' at byte 6`}},
		{"missing plugin file", replace(`../bin/dtf-exec-command`, `../bin/nope`),
			[]string{"worker.hcl:24:10", "bin/nope not found", "make build"}},
		{"duplicate plugin names", replace(`plugin "command"`, `plugin "reconnection"`),
			[]string{"worker.hcl:22:8: Duplicate plugin name", "already defined at", "worker.hcl:11,1-22"}},
		{"empty plugin name", replace(`plugin "command"`, `plugin ""`),
			[]string{"worker.hcl:22:8: Invalid plugin name", "name each plugin block"}},
		{"bad kind", replace(`kind = "executor"`, `kind = "runner"`),
			[]string{"worker.hcl:23:10", `kind "runner"`}},
		{"no executor", replace(`kind = "executor"`, `kind = "connector"`),
			[]string{"Missing executor plugin", "Second connector plugin"}},
		{"no connector", replace(`kind = "connector"`, `kind = "executor"`),
			[]string{"Missing connector plugin"}},
		{"bad log level", replace(`log_level = "info"`, `log_level = "loud"`),
			[]string{"worker.hcl:4:13", `log_level "loud"`}},
		{"bad sha256", replace(`env  = ["PATH", "HOME"]`, "env  = [\"PATH\"]\n  sha256 = \"abc\""),
			[]string{"Invalid sha256"}},
		{"bad env name", replace(`env  = ["PATH", "HOME"]`, `env  = ["PATH=/bin"]`),
			[]string{"Invalid plugin env", `"PATH=/bin" is not a name`}},
		{"nested block in config", replace(`nested             = { a = [1, 2] }`, "inner {\n}"),
			[]string{"Unexpected \"inner\" block"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeWorkerConfig(t, tt.body))
			require.Error(t, err)
			var diagErr *DiagnosticsError
			require.ErrorAs(t, err, &diagErr)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

// TestLoadLimitsInclusive loads a file with slots and the durations at the
// high end of their ranges.
func TestLoadLimitsInclusive(t *testing.T) {
	body := strings.Replace(validConfig, `slots     = 2`, "slots     = 1024\nshutdown_timeout = \"1h\"\n"+
		"drain_timeout = \"24h\"\nrestart_backoff_base = \"1m\"\nrestart_backoff_cap = \"1h\"", 1)
	body = strings.Replace(body, `start_timeout = "10s"`, `start_timeout = "10m"`, 1)
	cfg, err := Load(writeWorkerConfig(t, body))
	require.NoError(t, err)
	assert.Equal(t, 1024, cfg.Slots)
	assert.Equal(t, time.Hour, cfg.ShutdownTimeout)
	assert.Equal(t, 24*time.Hour, cfg.DrainTimeout)
	assert.Equal(t, time.Minute, cfg.RestartBackoffBase)
	assert.Equal(t, time.Hour, cfg.RestartBackoffCap)
	assert.Equal(t, 10*time.Minute, cfg.Connector().StartTimeout)
}

func TestLoadDefaultSlots(t *testing.T) {
	cfg, err := Load(writeWorkerConfig(t, strings.Replace(validConfig, "slots     = 2\n", "", 1)))
	require.NoError(t, err)
	assert.Equal(t, DefaultSlots, cfg.Slots)
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "worker.hcl"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestApplyOverrides(t *testing.T) {
	cfg, err := Load(writeWorkerConfig(t, validConfig))
	require.NoError(t, err)

	require.NoError(t, cfg.Apply(Overrides{WorkerID: "worker-7", DataDir: "rel/data", URL: "http://127.0.0.1:9000"}))
	wd, err := os.Getwd()
	require.NoError(t, err)
	assert.Equal(t, "worker-7", cfg.Coordinator.WorkerID)
	assert.Equal(t, filepath.Join(wd, "rel", "data"), cfg.DataDir)
	assert.Equal(t, "http://127.0.0.1:9000", cfg.Coordinator.URL)

	err = cfg.Apply(Overrides{URL: "ftp://x"})
	require.Error(t, err)
	assert.Equal(t, "http://127.0.0.1:9000", cfg.Coordinator.URL)

	require.NoError(t, cfg.Apply(Overrides{}))
	assert.Equal(t, "worker-7", cfg.Coordinator.WorkerID)
}

func TestConfigJSONIsObject(t *testing.T) {
	cfg, err := Load(writeWorkerConfig(t, validConfig))
	require.NoError(t, err)
	var object map[string]any
	require.NoError(t, json.Unmarshal(cfg.Connector().ConfigJSON, &object))
}

func TestLoadWorkerSecret(t *testing.T) {
	secret, _, err := protocol.NewCredential()
	require.NoError(t, err)
	t.Setenv("DTF_TEST_WORKER_SECRET", secret)
	withSecret := strings.Replace(validConfig, `token     = env("DTF_TEST_WORKER_TOKEN")`,
		`secret    = env("DTF_TEST_WORKER_SECRET")`, 1)
	cfg, err := Load(writeWorkerConfig(t, withSecret))
	require.NoError(t, err)
	assert.Equal(t, secret, cfg.Coordinator.Secret)

	withFile := strings.Replace(validConfig, `token     = env("DTF_TEST_WORKER_TOKEN")`,
		`secret_file = "worker.secret"`, 1)
	path := writeWorkerConfig(t, withFile)
	cfg, err = Load(path)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(filepath.Dir(path), "worker.secret"), cfg.Coordinator.SecretFile)
}

func TestLoadRejectsBadWorkerSecret(t *testing.T) {
	secret, _, err := protocol.NewCredential()
	require.NoError(t, err)
	t.Setenv("DTF_TEST_WORKER_SECRET", secret)
	for name, tc := range map[string]struct {
		line string
		want string
	}{
		"both":  {`secret = env("DTF_TEST_WORKER_SECRET")` + "\n  secret_file = \"s\"", "Conflicting worker secret"},
		"unset": {`secret = env("DTF_TEST_UNSET_SECRET")`, "environment variable"},
		"bad":   {`secret = "not-a-secret"`, "Invalid worker secret"},
	} {
		t.Run(name, func(t *testing.T) {
			text := strings.Replace(validConfig, `token     = env("DTF_TEST_WORKER_TOKEN")`, tc.line, 1)
			_, err := Load(writeWorkerConfig(t, text))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), secret, "the error shows the secret")
		})
	}
}
