package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// validConfigBody is a worker config whose plugin blocks have no path, so
// the binaries come from the default plugin_dir: the folder of the dtf
// binary, which cluster.Build fills with every plugin.
const validConfigBody = `data_dir = "data"
slots    = 1

coordinator {
  url       = "ws://127.0.0.1:1"
  worker_id = "worker-1"
}

plugin "reconnection" {
  kind = "connector"
  config {
    heartbeat_interval = "1s"
    heartbeat_timeout  = "3s"
  }
}

plugin "command" {
  kind = "executor"
  config {
    max_output_bytes = 4096
  }
}
`

// diagnosticsBlock returns the part of a dtf output from the diagnostics'
// heading to the end, which dtf worker and dtf validate share.
func diagnosticsBlock(t *testing.T, out string) string {
	t.Helper()
	start := strings.Index(out, "invalid worker config ")
	require.GreaterOrEqual(t, start, 0, "no diagnostics in output:\n%s", out)
	return strings.TrimSpace(out[start:])
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "worker.hcl")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	return path
}

func TestValidateValidWorkerConfig(t *testing.T) {
	path := writeConfig(t, validConfigBody)
	out, code := runDTF(t, "validate", "-config", path)
	require.Equal(t, 0, code, "output:\n%s", out)
	assert.Equal(t, path+": valid worker config (2 plugins checked; plugin_dir "+bin.Dir+")\n", out)

	out, code = runDTF(t, "validate", "-offline", "-config", path)
	require.Equal(t, 0, code, "output:\n%s", out)
	assert.Contains(t, out, "valid worker config (0 plugins checked: -offline; plugin_dir "+bin.Dir+")")

	out, code = runBinary(t, "dtf-worker", "validate", "-config", path)
	require.Equal(t, 0, code, "output:\n%s", out)
	assert.Equal(t, path+": valid worker config (2 plugins checked; plugin_dir "+bin.Dir+")\n", out)
}

func TestValidateCoordinatorConfig(t *testing.T) {
	root, err := cluster.RepoRoot()
	require.NoError(t, err)
	path := filepath.Join(root, "configs", "coordinator.hcl")
	out, code := runDTF(t, "validate", "-config", path)
	require.Equal(t, 0, code, "output:\n%s", out)
	assert.Contains(t, out, "valid coordinator config")

	broken := filepath.Join(t.TempDir(), "coordinator.hcl")
	require.NoError(t, os.WriteFile(broken, []byte("listen = \"127.0.0.1:7070\"\nlisten_port = 1\n"), 0o644))
	out, code = runDTF(t, "validate", "-config", broken)
	assert.Equal(t, 1, code, "output:\n%s", out)
	assert.Contains(t, out, "coordinator.hcl:2:1: Unsupported argument")

	out, code = runDTF(t, "validate", "-kind", "worker", "-config", broken)
	assert.Equal(t, 1, code, "output:\n%s", out)
	assert.Contains(t, out, "invalid worker config", "-kind forces the worker checks")
}

// TestValidateMatchesWorkerStart runs dtf worker, dtf validate and
// dtf-worker validate on each broken config and requires the same located
// diagnostics from all three.
func TestValidateMatchesWorkerStart(t *testing.T) {
	notPlugin := filepath.Join(t.TempDir(), "not-a-plugin.sh")
	require.NoError(t, os.WriteFile(notPlugin, []byte("#!/bin/sh\necho hello\n"), 0o755))
	replace := func(old, new string) string {
		require.Contains(t, validConfigBody, old)
		return strings.Replace(validConfigBody, old, new, 1)
	}

	cases := []struct {
		name   string
		config string
		// want are parts of the diagnostics: file:line:col and the
		// source line.
		want []string
	}{
		{"malformed HCL", replace("slots    = 1", "slots    = "),
			[]string{"worker.hcl:2:12: Invalid expression", "   2: slots    ="}},
		{"unknown field", replace("slots    = 1", "slots    = 1\nslot_count = 2"),
			[]string{"worker.hcl:3:1: Unsupported argument", "   3: slot_count = 2"}},
		{"duration without unit", replace(`kind = "connector"`, "kind = \"connector\"\n  start_timeout = \"30\""),
			[]string{"worker.hcl:11:19: Invalid duration", `start_timeout "30" has no unit`}},
		{"plugin path missing", replace(`kind = "executor"`, "kind = \"executor\"\n  path = \"/nonexistent/dtf-exec-command\""),
			[]string{"worker.hcl:19:10: Invalid plugin path", "/nonexistent/dtf-exec-command not found"}},
		{"plugin path not a plugin", replace(`kind = "connector"`, "kind = \"connector\"\n  path = \""+notPlugin+"\""),
			[]string{"worker.hcl:11:10: Invalid plugin path", "not a dtf plugin", notPlugin}},
		{"conventional path missing", replace(`plugin "command"`, `plugin "shell"`),
			[]string{"worker.hcl:17:1: Invalid plugin path", "dtf-exec-shell not found", "in plugin_dir"}},
		{"connector config without unit", replace(`heartbeat_interval = "1s"`, `heartbeat_interval = "1"`),
			[]string{"worker.hcl:12:26: Invalid heartbeat_interval", `invalid duration "1"`}},
		{"connector config unknown field", replace(`heartbeat_timeout  = "3s"`, `heartbeat_wait = "3s"`),
			[]string{"worker.hcl:13:22: Unsupported argument", `no setting "heartbeat_wait"`}},
		{"executor config of wrong type", replace(`max_output_bytes = 4096`, `max_output_bytes = "4k"`),
			[]string{"worker.hcl:20:24: Invalid value", `"4k" is not a valid int`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeConfig(t, c.config)
			workerOut, workerCode := runDTF(t, "worker", "-config", path)
			validateOut, validateCode := runDTF(t, "validate", "-config", path)
			assert.NotEqual(t, 0, workerCode, "worker output:\n%s", workerOut)
			assert.Equal(t, 1, validateCode, "validate output:\n%s", validateOut)

			fromWorker := diagnosticsBlock(t, workerOut)
			fromValidate := diagnosticsBlock(t, validateOut)
			assert.Equal(t, fromWorker, fromValidate)

			leanOut, leanCode := runBinary(t, "dtf-worker", "validate", "-config", path)
			assert.Equal(t, 1, leanCode, "dtf-worker validate output:\n%s", leanOut)
			assert.Equal(t, fromValidate, diagnosticsBlock(t, leanOut))
			for _, want := range c.want {
				assert.Contains(t, fromValidate, want)
			}
		})
	}
}

// startPolicyWorker starts a worker on validConfigBody with a restart
// block in the plugin block that starts with header.
func startPolicyWorker(t *testing.T, header string) *cluster.Process {
	t.Helper()
	require.Contains(t, validConfigBody, header)
	body := strings.Replace(validConfigBody, header, header+`
  restart {
    policy       = "never"
    backoff_base = "50ms"
  }`, 1)
	body = strings.Replace(body, `data_dir = "data"`, `data_dir = "`+filepath.Join(t.TempDir(), "data")+`"`, 1)
	path := writeConfig(t, body)
	worker, err := cluster.Start("worker-1", filepath.Join(t.TempDir(), "worker.log"),
		bin.Path("dtf"), []string{"worker", "-config", path})
	require.NoError(t, err)
	t.Cleanup(func() { _ = worker.Stop(10 * time.Second) })
	// A plugin killed before the host configured it fails the start
	// instead of crashing, so the tests wait for the start to end.
	require.NoError(t, cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		return strings.Contains(worker.Log(), "worker host started"), nil
	}), "log:\n%s", worker.Log())
	return worker
}

func TestExecutorRestartPolicyNever(t *testing.T) {
	worker := startPolicyWorker(t, `plugin "command" {`)
	executor := 0
	require.NoError(t, cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		executor = cluster.ChildNamed(worker.Pid(), "dtf-exec-command")
		return executor != 0, nil
	}), "log:\n%s", worker.Log())
	require.NoError(t, syscall.Kill(executor, syscall.SIGKILL))

	require.NoError(t, cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		return strings.Contains(worker.Log(), "executor plugin crashed and stays down"), nil
	}), "log:\n%s", worker.Log())
	assert.Zero(t, cluster.ChildNamed(worker.Pid(), "dtf-exec-command"), "a new executor process runs")
	assert.NotContains(t, worker.Log(), "executor plugin restarted")
	select {
	case <-worker.Done():
		t.Fatalf("the worker stopped; an executor that stays down must not stop it\n%s", worker.Log())
	default:
	}
}

func TestConnectorRestartPolicyNever(t *testing.T) {
	worker := startPolicyWorker(t, `plugin "reconnection" {`)
	connector := 0
	require.NoError(t, cluster.Poll(context.Background(), 30*time.Second, 20*time.Millisecond, func() (bool, error) {
		connector = cluster.ChildNamed(worker.Pid(), "dtf-reconnection")
		return connector != 0, nil
	}), "log:\n%s", worker.Log())
	require.NoError(t, syscall.Kill(connector, syscall.SIGKILL))

	select {
	case <-worker.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker runs on after its connector crashed\n%s", worker.Log())
	}
	assert.Contains(t, worker.Log(), "connector plugin reconnection stopped")
	assert.Contains(t, worker.Log(), "restart policy is never, so the worker stops")
}
