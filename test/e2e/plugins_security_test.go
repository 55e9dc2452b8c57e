package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// startWorkerWithCommandPlugin starts a worker whose "command" executor
// runs the binary at path, checked against sum when sum is not empty.
// Crashed plugins restart within a few hundred milliseconds. extraEnv is
// added to the worker process's environment.
func (e *env) startWorkerWithCommandPlugin(id, path, sum string, extraEnv ...string) *cluster.Process {
	e.t.Helper()
	config := filepath.Join(e.dir, id+".hcl")
	require.NoError(e.t, cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
		Bin:               bin,
		URL:               "ws://" + e.proxy.Addr(),
		WorkerID:          id,
		Token:             token,
		DataDir:           filepath.Join(e.dir, id),
		Slots:             1,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BackoffBase:       100 * time.Millisecond,
		BackoffCap:        time.Second,
		HealthyAfter:      3 * time.Second,
		Top: map[string]string{
			"restart_backoff_base": `"50ms"`,
			"restart_backoff_cap":  `"500ms"`,
		},
	}))
	text, err := os.ReadFile(config)
	require.NoError(e.t, err)
	block := fmt.Sprintf("plugin \"command\" {\n  kind = \"executor\"\n  path = %q\n", bin.Path("dtf-exec-command"))
	require.Contains(e.t, string(text), block, "the command plugin block changed its layout")
	replacement := fmt.Sprintf("plugin \"command\" {\n  kind = \"executor\"\n  path = %q\n", path)
	if sum != "" {
		replacement += fmt.Sprintf("  sha256 = %q\n", sum)
	}
	require.NoError(e.t, os.WriteFile(config, []byte(strings.Replace(string(text), block, replacement, 1)), 0o644))

	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"), bin.Path("dtf"),
		[]string{"worker", "-config", config}, extraEnv...)
	require.NoError(e.t, err)
	e.workers[id] = p
	return p
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// A plugin binary whose checksum does not match the one in worker.hcl
// keeps the worker from starting, with an error that names both sums.
func TestWrongPluginChecksumStopsWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path := bin.Path("dtf-exec-command")
	actual := fileSum(t, path)
	expected := strings.Repeat("0", 64)

	worker := e.startWorkerWithCommandPlugin("worker-1", path, expected)
	log := waitExit(t, worker, 30*time.Second)
	assert.Contains(t, log, "plugin binary checksum mismatch")
	assert.Contains(t, log, "expected "+expected)
	assert.Contains(t, log, "got "+actual)
	assert.Contains(t, log, "update sha256 in worker.hcl")
	assert.Zero(t, cluster.ChildNamed(worker.Pid(), "dtf-exec-command"))
}

// The checksum is checked on every launch: a binary replaced while the
// worker runs is rejected when the plugin restarts after a crash.
func TestReplacedPluginRejectedOnRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	data, err := os.ReadFile(bin.Path("dtf-exec-command"))
	require.NoError(t, err)
	dir := filepath.Join(e.dir, "plugins")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "dtf-exec-command")
	require.NoError(t, os.WriteFile(path, data, 0o755))
	good := fileSum(t, path)

	worker := e.startWorkerWithCommandPlugin("worker-1", path, good)
	e.waitConnected("worker-1")
	executor := e.waitPlugin(worker, "dtf-exec-command", 0)

	// A working binary with other bytes replaces the file, then the plugin
	// crashes.
	replaced := append(data, []byte("replaced")...)
	next := path + ".new"
	require.NoError(t, os.WriteFile(next, replaced, 0o755))
	require.NoError(t, os.Rename(next, path))
	bad := fileSum(t, path)
	require.NoError(t, syscall.Kill(executor, syscall.SIGKILL))

	err = cluster.Poll(context.Background(), 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		return strings.Contains(worker.Log(), "executor plugin restart failed"), nil
	})
	require.NoError(t, err, "no failed restart logged\n%s", tail(worker.Log()))
	log := worker.Log()
	assert.Contains(t, log, "plugin binary checksum mismatch")
	assert.Contains(t, log, "expected "+good)
	assert.Contains(t, log, "got "+bad)
	assert.Zero(t, cluster.ChildNamed(worker.Pid(), "dtf-exec-command"), "the replaced binary runs")
	select {
	case <-worker.Done():
		t.Fatalf("the worker exited\n%s", tail(worker.Log()))
	default:
	}
}

// Plugins start with only the variables their config lists: a variable of
// the worker's own environment that no plugin block names reaches none of
// them.
func TestPluginsSeeOnlyListedEnvironment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const canary = "unlisted-canary-5e0c"
	worker := e.startWorkerWithCommandPlugin("worker-1", bin.Path("dtf-exec-command"), "",
		"DTF_E2E_UNLISTED="+canary)
	e.waitConnected("worker-1")

	for _, name := range []string{"dtf-exec-command", "dtf-exec-gotest", "dtf-reconnection"} {
		pid := e.waitPlugin(worker, name, 0)
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		require.NoError(t, err)
		assert.NotContains(t, string(environ), canary, "%s sees a variable its config does not list", name)
		assert.NotContains(t, string(environ), "DTF_E2E_UNLISTED", "%s sees a variable its config does not list", name)
	}
	command := e.waitPlugin(worker, "dtf-exec-command", 0)
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", command))
	require.NoError(t, err)
	entries := strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
	assert.Contains(t, entries, "PATH="+os.Getenv("PATH"), "the command plugin gets PATH, which its config lists")
}
