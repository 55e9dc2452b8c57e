package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// TestWorkerBinary runs the lean dtf-worker binary as an operator does:
// its usage errors, a task through a worker it hosts, and a reload.
func TestWorkerBinary(t *testing.T) {
	out, code := runBinary(t, "dtf-worker")
	assert.Equal(t, 2, code, out)
	assert.Contains(t, out, "dtf-worker: worker needs -config FILE, such as configs/worker.hcl")

	out, code = runBinary(t, "dtf-worker", "-h")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "Usage: dtf-worker -config FILE")
	assert.Contains(t, out, "dtf-worker reload -config FILE")

	out, code = runBinary(t, "dtf-worker", "-version")
	assert.Equal(t, 0, code, out)
	assert.Regexp(t, `^dtf-worker \S+ \(go\S+ linux/\S+\)\n$`, out)

	out, code = runBinary(t, "dtf-worker", "-config", "worker.hcl", "extra")
	assert.Equal(t, 2, code, out)
	assert.Contains(t, out, `dtf-worker takes no arguments, got "extra"`)

	out, code = runBinary(t, "dtf-worker", "worker", "-config", "worker.hcl")
	assert.Equal(t, 2, code, out)
	assert.Contains(t, out, "leave out the word worker: dtf-worker -config worker.hcl")

	out, code = runBinary(t, "dtf-worker", "reload")
	assert.Equal(t, 2, code, out)
	assert.Contains(t, out, "worker reload needs -config FILE")

	e := newEnv(t)
	w := e.startWorker("w1", 1)
	e.waitConnected("w1")
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", w.Pid()))
	require.NoError(t, err)
	assert.Equal(t, "dtf-worker", filepath.Base(exe), "the worker host's program")

	batch := e.submitCommands([]string{"sh", "-c", "echo from dtf-worker"})
	tasks := e.waitTerminal(batch, 60*time.Second)
	e.requireExactlyOnce(tasks)

	out, code = runBinary(t, "dtf-worker", "reload", "-config", filepath.Join(e.dir, "w1.hcl"))
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, fmt.Sprintf("sent SIGHUP to worker pid %d", w.Pid()))
	err = cluster.Poll(context.Background(), 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		return strings.Contains(w.Log(), "SIGHUP received, reloading the connector plugin"), nil
	})
	require.NoError(t, err, "worker log:\n%s", w.Log())
}
