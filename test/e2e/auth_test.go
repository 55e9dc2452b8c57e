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

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// secretEnv is the environment variable through which a worker of
// startCredentialWorkerFromEnv gets its secret.
const secretEnv = "DTF_WORKER_SECRET"

// startCredentialWorker creates a credential for id with the dtf command and
// starts a worker that logs in with it, read from a file. It returns the
// worker and the file that holds the secret.
func (e *env) startCredentialWorker(id string) (*cluster.Process, string) {
	e.t.Helper()
	return e.startCredentialWorkerWith(id, false)
}

// startCredentialWorkerWith is startCredentialWorker; with fromEnv the
// worker reads the secret from its environment variable secretEnv instead
// of the file.
func (e *env) startCredentialWorkerWith(id string, fromEnv bool) (*cluster.Process, string) {
	e.t.Helper()
	secretFile := filepath.Join(e.dir, id+".secret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(e.t, cluster.CreateCredential(ctx, bin, e.coordConfig, id, secretFile))

	cfg := cluster.WorkerConfig{
		Bin:               bin,
		URL:               "ws://" + e.proxy.Addr(),
		WorkerID:          id,
		SecretFile:        secretFile,
		DataDir:           filepath.Join(e.dir, id),
		Slots:             1,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BackoffBase:       100 * time.Millisecond,
		BackoffCap:        time.Second,
		HealthyAfter:      3 * time.Second,
	}
	var extraEnv []string
	if fromEnv {
		secret, err := os.ReadFile(secretFile)
		require.NoError(e.t, err)
		cfg.SecretFile, cfg.SecretEnv = "", secretEnv
		extraEnv = append(extraEnv, secretEnv+"="+strings.TrimSpace(string(secret)))
	}
	config := filepath.Join(e.dir, id+".hcl")
	require.NoError(e.t, cluster.WriteWorkerConfig(config, cfg))
	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"), bin.Path("dtf"), []string{"worker", "-config", config},
		extraEnv...)
	require.NoError(e.t, err)
	e.workers[id] = p
	return p, secretFile
}

// waitExit waits until the process exits and returns its log.
func waitExit(t *testing.T, p *cluster.Process, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.Done():
	case <-timer.C:
		t.Fatalf("%s still runs after %s\n%s", p.Name, timeout, tail(p.Log()))
	}
	return p.Log()
}

// A worker that logs in with its own credential runs tasks, and its
// executor plugins find neither the secret nor the path of its file in
// their environment, also when the secret comes from the worker's own
// environment.
func TestCredentialWorkerRunsTasks(t *testing.T) {
	t.Parallel()
	for _, fromEnv := range []bool{false, true} {
		t.Run(fmt.Sprintf("secret_from_env=%v", fromEnv), func(t *testing.T) {
			e := newEnv(t)
			worker, secretFile := e.startCredentialWorkerWith("worker-1", fromEnv)
			e.waitConnected("worker-1")

			batch := e.submitCommands([]string{"echo", "ran"})
			tasks := e.waitTerminal(batch, time.Minute)
			e.requireExactlyOnce(tasks)

			secret, err := os.ReadFile(secretFile)
			require.NoError(t, err)
			for _, name := range []string{"dtf-exec-command", "dtf-exec-gotest"} {
				pid := cluster.ChildNamed(worker.Pid(), name)
				require.NotZero(t, pid, "%s is not running", name)
				environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
				require.NoError(t, err)
				env := string(environ)
				assert.NotContains(t, env, strings.TrimSpace(string(secret)), "%s sees the worker's secret", name)
				assert.NotContains(t, env, "dtfc_", "%s sees a worker credential", name)
				assert.NotContains(t, env, secretFile, "%s sees the secret file's path", name)
				assert.NotContains(t, env, secretEnv, "%s sees the secret's variable", name)
			}
		})
	}
}

// Revoking a worker's credentials disconnects it within seconds, and after
// the coordinator has refused its new logins a few times the worker stops
// with one error that names it and the command that fixes it.
func TestRevokedCredentialStopsWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker, _ := e.startCredentialWorker("worker-revoked")
	e.waitConnected("worker-revoked")
	other, _ := e.startCredentialWorker("worker-kept")
	e.waitConnected("worker-kept")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, cluster.RevokeCredentials(ctx, bin, e.coordConfig, "worker-revoked"))
	// The coordinator checks for revocations every second.
	e.waitDisconnectedWithin("worker-revoked", 10*time.Second)

	log := waitExit(t, worker, time.Minute)
	assert.Contains(t, log, "worker-revoked")
	assert.Contains(t, log, "dtf credentials")

	// The other worker keeps its session and runs a task.
	batch := e.submitCommands([]string{"echo", "still here"})
	tasks := e.waitTerminal(batch, time.Minute)
	e.requireExactlyOnce(tasks)
	assert.Equal(t, "worker-kept", tasks[0].Attempts[0].WorkerID)
	select {
	case <-other.Done():
		t.Fatalf("the worker with a valid credential stopped\n%s", tail(other.Log()))
	default:
	}
}

// A worker whose secret is wrong never connects and stops with the error
// that names the command to create or rotate its credential.
func TestWrongSecretStopsWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker, secretFile := e.startCredentialWorker("worker-wrong")
	e.waitConnected("worker-wrong")
	require.NoError(t, worker.Stop(20*time.Second))

	// Keep the credential id, change the random part.
	secret, err := os.ReadFile(secretFile)
	require.NoError(t, err)
	text := strings.TrimSpace(string(secret))
	dot := strings.LastIndexByte(text, '.')
	require.Positive(t, dot, "secret %q has no random part", text)
	wrong := text[:dot+1] + strings.Repeat("A", len(text)-dot-1)
	require.NoError(t, os.WriteFile(secretFile, []byte(wrong+"\n"), 0o600))

	config := filepath.Join(e.dir, "worker-wrong.hcl")
	p, err := cluster.Start("worker-wrong", filepath.Join(e.dir, "worker-wrong.log"), bin.Path("dtf"),
		[]string{"worker", "-config", config})
	require.NoError(t, err)
	e.workers["worker-wrong"] = p

	log := waitExit(t, p, time.Minute)
	assert.Contains(t, log, "dtf credentials")
	assert.NotContains(t, log, wrong, "the log shows the secret")
	workers, err := e.client.ListWorkers(context.Background())
	require.NoError(t, err)
	for _, w := range workers {
		if w.ID == "worker-wrong" {
			assert.NotEqual(t, api.WorkerConnected, w.State, "a worker with a wrong secret is connected")
		}
	}
}
