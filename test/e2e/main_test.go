// Package e2e runs dtf as its users do: real coordinator and worker
// processes on 127.0.0.1, plugins launched through go-plugin, real SQLite
// files, and network faults injected by the fault proxy.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
	"github.com/dtf-io/dtf/test/faultproxy"
)

// bin holds the binaries that TestMain builds once for every test.
var bin cluster.Binaries

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	built, remove, err := cluster.BuildTemp("dtf-e2e-bin-", 5*time.Minute)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	bin = built
	return m.Run()
}

// env is one test's cluster: a coordinator, a fault proxy in front of it,
// and workers that dial the proxy.
type env struct {
	t           *testing.T
	dir         string
	addr        string
	coordinator *cluster.Process
	proxy       *faultproxy.Proxy
	workers     map[string]*cluster.Process
	client      *api.Client
	coordConfig string
	// coordCfg is what coordConfig was written from.
	coordCfg cluster.CoordinatorConfig
}

const token = "e2e-token"

// newEnv starts a coordinator and a fault proxy; workers start with
// startWorker.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with a coordinator config that configure may change
// before the coordinator starts. A nil configure keeps the defaults.
func newEnvWith(t *testing.T, configure func(*cluster.CoordinatorConfig)) *env {
	t.Helper()
	addr, err := cluster.FreeAddr()
	require.NoError(t, err)
	e := &env{t: t, dir: t.TempDir(), addr: addr, workers: map[string]*cluster.Process{}}
	e.coordConfig = filepath.Join(e.dir, "coordinator.hcl")
	e.coordCfg = cluster.CoordinatorConfig{
		Listen:            addr,
		DataDir:           filepath.Join(e.dir, "coordinator"),
		Token:             token,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		ReassignAfter:     20 * time.Second,
		TaskTypes:         []string{"command", "gotest", "lonely"},
	}
	if configure != nil {
		configure(&e.coordCfg)
	}
	require.NoError(t, cluster.WriteCoordinatorConfig(e.coordConfig, e.coordCfg))
	e.client = &api.Client{BaseURL: "http://" + addr}
	e.startCoordinator()

	e.proxy, err = faultproxy.New(addr)
	require.NoError(t, err)
	t.Cleanup(e.stop)
	return e
}

func (e *env) startCoordinator() {
	e.t.Helper()
	p, err := cluster.Start("coordinator", filepath.Join(e.dir, "coordinator.log"),
		bin.Path("dtf"), []string{"coordinator", "-config", e.coordConfig})
	require.NoError(e.t, err)
	e.coordinator = p
	err = cluster.WaitHealthy(context.Background(), 20*time.Second, "http://"+e.addr)
	require.NoError(e.t, err, "coordinator log:\n%s", p.Log())
}

func (e *env) startWorker(id string, slots int) *cluster.Process {
	e.t.Helper()
	return e.startWorkerWith(id, slots, nil)
}

// startWorkerWith starts a worker whose reconnection plugin config block
// also sets the given attributes, as HCL expressions.
func (e *env) startWorkerWith(id string, slots int, reconnection map[string]string) *cluster.Process {
	e.t.Helper()
	config := filepath.Join(e.dir, id+".hcl")
	require.NoError(e.t, cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
		Bin:               bin,
		URL:               "ws://" + e.proxy.Addr(),
		WorkerID:          id,
		Token:             token,
		DataDir:           filepath.Join(e.dir, id),
		Slots:             slots,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BackoffBase:       100 * time.Millisecond,
		BackoffCap:        time.Second,
		HealthyAfter:      3 * time.Second,
		Reconnection:      reconnection,
	}))
	// Most tests run the lean dtf-worker binary, as a fleet would; the
	// tests that start a worker themselves run dtf worker.
	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"),
		bin.Path("dtf-worker"), []string{"-config", config})
	require.NoError(e.t, err)
	e.workers[id] = p
	return p
}

// waitConnected waits until the coordinator lists every id as connected.
func (e *env) waitConnected(ids ...string) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		workers, err := e.client.ListWorkers(context.Background())
		if err != nil {
			return false, nil
		}
		connected := cluster.ConnectedWorkers(workers)
		for _, id := range ids {
			if !connected[id] {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(e.t, err, "workers %v did not connect\n%s", ids, e.logs())
}

// waitTerminal waits until every task of the batch is terminal and returns
// them with their attempts and outcomes.
func (e *env) waitTerminal(batch string, timeout time.Duration) []api.Task {
	e.t.Helper()
	ctx := context.Background()
	err := cluster.Poll(ctx, timeout, 200*time.Millisecond, func() (bool, error) {
		tasks, err := e.client.ListTasks(ctx, batch, "")
		if err != nil {
			return false, nil
		}
		for _, task := range tasks {
			if !api.Terminal(task.State) {
				return false, nil
			}
		}
		return len(tasks) > 0, nil
	})
	require.NoError(e.t, err, "tasks of batch %s did not finish\n%s", batch, e.logs())
	tasks, err := e.client.ListTasks(ctx, batch, "")
	require.NoError(e.t, err)
	full := make([]api.Task, 0, len(tasks))
	for _, task := range tasks {
		got, err := e.client.GetTask(ctx, task.ID)
		require.NoError(e.t, err)
		full = append(full, *got)
	}
	return full
}

// submitCommands submits one command task per argv and returns the batch.
func (e *env) submitCommands(argvs ...[]string) string {
	e.t.Helper()
	req := api.SubmitRequest{}
	for i, argv := range argvs {
		payload, err := json.Marshal(map[string]any{"argv": argv})
		require.NoError(e.t, err)
		req.Tasks = append(req.Tasks, api.TaskSpec{
			Name: fmt.Sprintf("task-%d", i), Type: "command", Payload: payload, Timeout: "2m",
		})
	}
	resp, err := e.client.Submit(context.Background(), req)
	require.NoError(e.t, err)
	return resp.Batch
}

// requireExactlyOnce checks that every task ended succeeded with exactly one
// finished attempt whose outcome is the one applied.
func (e *env) requireExactlyOnce(tasks []api.Task) {
	e.t.Helper()
	for _, task := range tasks {
		require.Equal(e.t, api.StateSucceeded, task.State, "task %s (%s)", task.ID, task.Name)
		require.NotNil(e.t, task.Outcome, "task %s has no outcome", task.ID)
		require.Equal(e.t, task.Attempt, task.Outcome.Attempt, "task %s outcome attempt", task.ID)
		finished := 0
		for _, attempt := range task.Attempts {
			if api.Terminal(attempt.State) {
				finished++
			}
		}
		require.Equal(e.t, 1, finished, "task %s finished attempts: %+v", task.ID, task.Attempts)
	}
}

func (e *env) logs() string {
	out := "--- coordinator\n" + tail(e.coordinator.Log())
	for id, w := range e.workers {
		out += "--- " + id + "\n" + tail(w.Log())
	}
	return out
}

func tail(s string) string {
	const keep = 6000
	if len(s) > keep {
		return "..." + s[len(s)-keep:]
	}
	return s
}

func (e *env) stop() {
	for id, w := range e.workers {
		if err := w.Stop(10 * time.Second); err != nil {
			e.t.Logf("stop %s: %v", id, err)
		}
	}
	e.proxy.Close()
	if err := e.coordinator.Stop(10 * time.Second); err != nil {
		e.t.Logf("stop coordinator: %v", err)
	}
	if e.t.Failed() {
		e.t.Log(e.logs())
	}
}

// waitRunning waits until at least n tasks of the batch are running.
func (e *env) waitRunning(batch string, n int) {
	e.t.Helper()
	ctx := context.Background()
	err := cluster.Poll(ctx, 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		tasks, err := e.client.ListTasks(ctx, batch, api.StateRunning)
		return err == nil && len(tasks) >= n, nil
	})
	require.NoError(e.t, err, "fewer than %d tasks of %s started\n%s", n, batch, e.logs())
}

// waitDisconnected waits until the coordinator lists the worker as
// disconnected.
func (e *env) waitDisconnected(id string) {
	e.t.Helper()
	e.waitDisconnectedWithin(id, 30*time.Second)
}

// waitDisconnectedWithin waits up to timeout until the coordinator lists the
// worker as disconnected.
func (e *env) waitDisconnectedWithin(id string, timeout time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	err := cluster.Poll(ctx, timeout, 50*time.Millisecond, func() (bool, error) {
		workers, err := e.client.ListWorkers(ctx)
		return err == nil && !cluster.ConnectedWorkers(workers)[id], nil
	})
	require.NoError(e.t, err, "worker %s stayed connected\n%s", id, e.logs())
}

// waitOutbox waits until the worker holds at least n outcomes on disk.
func (e *env) waitOutbox(id string, n int) {
	e.t.Helper()
	dir := filepath.Join(e.dir, id, "outbox")
	err := cluster.Poll(context.Background(), 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		return len(matches) >= n, nil
	})
	require.NoError(e.t, err, "worker %s outbox did not reach %d outcomes\n%s", id, n, e.logs())
}
