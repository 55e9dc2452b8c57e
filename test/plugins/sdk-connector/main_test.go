package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// buildBinaries compiles the dtf command, the command executor and this
// connector into a temporary folder.
func buildBinaries(t *testing.T) map[string]string {
	t.Helper()
	repo, err := cluster.RepoRoot()
	require.NoError(t, err)
	dir := t.TempDir()
	packages := map[string]string{
		"dtf":              "./cmd/dtf",
		"dtf-exec-command": "./examples/command",
		"sdk-connector":    "./test/plugins/sdk-connector",
	}
	paths := map[string]string{}
	for name, pkg := range packages {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		cancel()
		require.NoError(t, err, "go build %s: %s", pkg, out)
		paths[name] = filepath.Join(dir, name)
	}
	return paths
}

// readRecord returns the lines of the connector's record file so far.
func readRecord(path string) ([]recordLine, error) {
	file, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var lines []recordLine
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		var line recordLine
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("record line %q: %w", scanner.Text(), err)
		}
		lines = append(lines, line)
	}
	return lines, scanner.Err()
}

// The real worker host launches the SDK connector through go-plugin,
// sends its state sync through it, runs the task that it assigns on the
// command executor, sends the outcome through it, and calls its Stop at
// shutdown.
func TestWorkerHostRunsSDKConnector(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries and starts a worker")
	}
	bin := buildBinaries(t)
	dir := t.TempDir()
	recordPath := filepath.Join(dir, "frames.jsonl")
	configPath := filepath.Join(dir, "worker.hcl")
	config := fmt.Sprintf(`data_dir  = %q
slots     = 1
log_level = "debug"

coordinator {
  url       = "ws://127.0.0.1:1/ws"
  worker_id = "sdk-worker"
  token     = "unused-by-the-loopback-connector"
}

plugin "reconnection" {
  kind = "connector"
  path = %q
  config {
    record    = %q
    task_type = "command"
    payload   = { argv = ["echo", "hello from the sdk connector"] }
  }
}

plugin "command" {
  kind = "executor"
  path = %q
  env  = ["PATH"]
}
`, filepath.Join(dir, "data"), bin["sdk-connector"], recordPath, bin["dtf-exec-command"])
	require.NoError(t, os.WriteFile(configPath, []byte(config), 0o600))

	worker, err := cluster.Start("worker", filepath.Join(dir, "worker.log"), bin["dtf"],
		[]string{"worker", "-config", configPath})
	require.NoError(t, err)
	t.Cleanup(func() {
		select {
		case <-worker.Done():
		default:
			worker.Kill()
		}
	})

	var outcome *recordLine
	err = cluster.Poll(context.Background(), 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		lines, err := readRecord(recordPath)
		for i := range lines {
			if lines[i].Type == "task_outcome" {
				outcome = &lines[i]
			}
		}
		return outcome != nil, err
	})
	require.NoError(t, err, "no task outcome reached the connector; worker log:\n%s", worker.Log())
	assert.Equal(t, "sdk-task-1", outcome.TaskID)
	assert.Equal(t, "STATUS_SUCCEEDED", outcome.Status)
	assert.Contains(t, outcome.Output, "hello from the sdk connector")

	require.NoError(t, worker.Stop(30*time.Second), "worker log:\n%s", worker.Log())
	lines, err := readRecord(recordPath)
	require.NoError(t, err)
	var types []string
	for _, line := range lines {
		types = append(types, line.Type)
	}
	require.NotEmpty(t, types)
	assert.Equal(t, "configured", types[0], "Configure comes first")
	assert.Contains(t, types, "state_sync", "the host synced its state after the connected event")
	assert.Contains(t, types, "task_started")
	assert.Equal(t, "stopped", types[len(types)-1], "the host called Stop at shutdown")
	assert.False(t, strings.Contains(worker.Log(), "panic"), "worker log has a panic:\n%s", worker.Log())
}
