package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
)

// conventionalConfig has plugin blocks without path, so the binaries come
// from plugin_dir.
const conventionalConfig = `
data_dir = "../data"
%s
coordinator {
  url       = "ws://127.0.0.1:7070"
  worker_id = "worker-1"
}
plugin "reconnection" {
  kind = "connector"
}
plugin "command" {
  kind = "executor"
}
`

func withPluginDir(line string) string {
	return strings.Replace(conventionalConfig, "%s", line, 1)
}

func TestPluginDirConvention(t *testing.T) {
	path := writeWorkerConfig(t, withPluginDir(`plugin_dir = "../bin"`))
	root := filepath.Dir(filepath.Dir(path))

	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(root, "bin"), cfg.PluginDir)
	assert.Equal(t, filepath.Join(root, "bin", "dtf-reconnection"), cfg.Connector().Path)
	assert.Equal(t, filepath.Join(root, "bin", "dtf-exec-command"), cfg.Executors()[0].Path)
}

func TestPluginDirDefaultsToExecutableDir(t *testing.T) {
	path := writeWorkerConfig(t, withPluginDir(""))
	bin := filepath.Join(filepath.Dir(filepath.Dir(path)), "bin")
	old := executableDir
	executableDir = func() (string, error) { return bin, nil }
	t.Cleanup(func() { executableDir = old })

	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, bin, cfg.PluginDir)
	assert.Equal(t, filepath.Join(bin, "dtf-exec-command"), cfg.Executors()[0].Path)
}

func TestBinaryName(t *testing.T) {
	assert.Equal(t, "dtf-exec-command", BinaryName("executor", "command"))
	assert.Equal(t, "dtf-reconnection", BinaryName("connector", "reconnection"))
	assert.Equal(t, "dtf-metrics", BinaryName("metrics", "metrics"))
}

// TestPluginNamedWorker checks that a connector named worker, which would
// run the worker host binary itself as its plugin, is refused even though
// the file exists.
func TestPluginNamedWorker(t *testing.T) {
	body := withPluginDir(`plugin_dir = "../bin"`)
	body = strings.Replace(body, `plugin "reconnection"`, `plugin "worker"`, 1)
	path := writeWorkerConfig(t, body)
	bin := filepath.Join(filepath.Dir(filepath.Dir(path)), "bin", WorkerBinary)
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))

	_, err := Load(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "worker.hcl:8:1: Reserved plugin name")
	assert.Contains(t, err.Error(), `A plugin "worker" of kind "connector" without path would run dtf-worker`)
	assert.Contains(t, err.Error(), "rename the plugin or set its path")
}

func TestPluginDirMissingBinary(t *testing.T) {
	body := withPluginDir(`plugin_dir = "../bin"`)
	body = strings.Replace(body, `plugin "command"`, `plugin "shell"`, 1)
	path := writeWorkerConfig(t, body)
	want := filepath.Join(filepath.Dir(filepath.Dir(path)), "bin", "dtf-exec-shell")

	_, err := Load(path)
	require.Error(t, err)
	text := err.Error()
	assert.Contains(t, text, "worker.hcl:11:1: Invalid plugin path")
	assert.Contains(t, text, want+" not found")
	assert.Contains(t, text, `the name for a plugin "shell" of kind "executor"`)
	assert.Contains(t, text, `plugin "shell" {`, "the source line")
}

func TestPluginDirEmpty(t *testing.T) {
	_, err := Load(writeWorkerConfig(t, withPluginDir(`plugin_dir = ""`)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "worker.hcl:3:14: Invalid plugin_dir")
}

func TestRestartBlock(t *testing.T) {
	body := strings.Replace(validConfig, `  env  = ["PATH", "HOME"]`, `  env  = ["PATH", "HOME"]
  restart {
    policy       = "never"
    backoff_base = "2s"
  }`, 1)
	body = strings.Replace(body, `log_level = "info"`, "log_level = \"info\"\nrestart_backoff_cap = \"1m\"", 1)
	cfg, err := Load(writeWorkerConfig(t, body))
	require.NoError(t, err)

	command := cfg.Executors()[0].Restart
	assert.True(t, command.Never())
	assert.Equal(t, 2*time.Second, command.BackoffBase)
	assert.Equal(t, time.Minute, command.BackoffCap, "the cap comes from restart_backoff_cap")

	connector := cfg.Connector().Restart
	assert.False(t, connector.Never())
	assert.Equal(t, RestartAlways, connector.Policy)
	assert.Equal(t, DefaultRestartBackoffBase, connector.BackoffBase)
	assert.Equal(t, time.Minute, connector.BackoffCap)
}

func TestRestartBlockErrors(t *testing.T) {
	tests := []struct {
		name  string
		block string
		want  []string
	}{
		{"bad policy", `policy = "sometimes"`,
			[]string{"worker.hcl:27:14: Invalid restart policy", `policy "sometimes" is not one of "always"`}},
		{"base without unit", `backoff_base = "2"`,
			[]string{"worker.hcl:27:20: Invalid duration", `backoff_base "2" has no unit`}},
		{"base too short", `backoff_base = "1ms"`,
			[]string{"worker.hcl:27:20", `backoff_base "1ms" is too short`}},
		{"cap too long", `backoff_cap = "2h"`,
			[]string{"worker.hcl:27:19", `backoff_cap "2h" is too long; use at most "1h"`}},
		{"cap below base", "backoff_base = \"10s\"\n    backoff_cap = \"1s\"",
			[]string{"worker.hcl:28:19", "restart backoff cap 1s is below its base 10s"}},
		{"base above top-level cap", `backoff_base = "1m"`,
			[]string{"worker.hcl:27:20", "restart backoff cap 30s is below its base 1m"}},
		{"unknown field", `tries = 3`,
			[]string{"worker.hcl:27:5: Unsupported argument"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Replace(validConfig, `  env  = ["PATH", "HOME"]`,
				"  env  = [\"PATH\", \"HOME\"]\n  restart {\n    "+tt.block+"\n  }", 1)
			_, err := Load(writeWorkerConfig(t, body))
			require.Error(t, err)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestConfigDiagnosticsLocated(t *testing.T) {
	cfg, err := Load(writeWorkerConfig(t, validConfig))
	require.NoError(t, err)
	connector := cfg.Connector()

	tests := []struct {
		name    string
		problem *pb.ConfigProblem
		want    []string
	}{
		{"attribute", &pb.ConfigProblem{Path: "heartbeat_interval", Summary: "Invalid duration",
			Detail: "too short"},
			[]string{"worker.hcl:17:26: Invalid duration", `heartbeat_interval = "2s"`, "too short"}},
		{"list element", &pb.ConfigProblem{Path: "nested.a[1]", Summary: "Invalid value", Detail: "odd"},
			[]string{"worker.hcl:19:36: Invalid value"}},
		{"unknown key under an object", &pb.ConfigProblem{Path: "nested.b", Summary: "Missing value",
			Detail: "b is required"},
			[]string{"worker.hcl:19:26: Missing value", "nested.b: b is required"}},
		{"setting not in the block", &pb.ConfigProblem{Path: "listen", Summary: "Missing listen",
			Detail: "set listen"},
			[]string{"worker.hcl:16:3: Missing listen", "listen: set listen"}},
		{"whole block", &pb.ConfigProblem{Summary: "Invalid plugin config", Detail: "broken"},
			[]string{"worker.hcl:16:3: Invalid plugin config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := connector.ConfigDiagnostics([]*pb.ConfigProblem{tt.problem})
			require.Len(t, diags, 1)
			text := cfg.Diagnostics(diags).Error()
			assert.True(t, strings.HasPrefix(text, "invalid worker config "+cfg.File+":\n"), text)
			for _, want := range tt.want {
				assert.Contains(t, text, want)
			}
		})
	}
}

func TestConfigDiagnosticsWithoutConfigBlock(t *testing.T) {
	cfg, err := Load(writeWorkerConfig(t, validConfig))
	require.NoError(t, err)
	diags := cfg.Executors()[0].ConfigDiagnostics([]*pb.ConfigProblem{{Path: "listen", Detail: "required"}})
	text := cfg.Diagnostics(diags).Error()
	assert.Contains(t, text, "worker.hcl:22:1: Invalid plugin config")
	assert.Contains(t, text, `In the config of plugin "command": listen: required`)
}

func TestPluginDiagnosticFields(t *testing.T) {
	body := strings.Replace(validConfig, `env  = ["PATH", "HOME"]`,
		"env  = [\"PATH\", \"HOME\"]\n  sha256 = \""+strings.Repeat("a", 64)+"\"", 1)
	cfg, err := Load(writeWorkerConfig(t, body))
	require.NoError(t, err)
	command := cfg.Executors()[0]

	for field, want := range map[string]string{
		FieldPath:         "worker.hcl:24:10: ",
		FieldSHA256:       "worker.hcl:26:12: ",
		FieldStartTimeout: "worker.hcl:22:1: ", // not in the block: its header
		FieldBlock:        "worker.hcl:22:1: ",
	} {
		text := cfg.Diagnostics(hcl.Diagnostics{command.Diagnostic(field, "S", "D")}).Error()
		assert.Contains(t, text, want+"S", "field %q", field)
	}

	// A Plugin built without Load has no locations.
	bare := Plugin{Name: "x"}
	assert.Nil(t, bare.Diagnostic(FieldPath, "S", "D").Subject)
}

func TestLoadKeepsFiles(t *testing.T) {
	path := writeWorkerConfig(t, validConfig)
	cfg, err := Load(path)
	require.NoError(t, err)
	require.Contains(t, cfg.files, path)
	src, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, src, cfg.files[path].Bytes)
}

func TestConnectorDiagnosticsAtCoordinatorBlock(t *testing.T) {
	cfg, err := Load(writeWorkerConfig(t, validConfig))
	require.NoError(t, err)
	diags := cfg.Connector().ConfigDiagnostics([]*pb.ConfigProblem{
		{Path: "coordinator.worker_id", Summary: "Invalid coordinator.worker_id", Detail: "taken"},
	})
	text := cfg.Diagnostics(diags).Error()
	assert.Contains(t, text, "worker.hcl:8:15: Invalid coordinator.worker_id")
	assert.Contains(t, text, `worker_id = "worker-1"`)
}
