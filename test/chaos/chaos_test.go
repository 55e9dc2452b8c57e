package chaos

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
	"github.com/dtf-io/dtf/test/faultproxy"
)

// The defaults are the short run of `make test`: under a minute of faults
// and at most three more minutes for the tasks to finish.
var (
	seedFlag     = flag.Int64("chaos.seed", 1, "seed of the fault schedule and the task mix")
	durationFlag = flag.Duration("chaos.duration", 50*time.Second, "how long faults are injected")
	workersFlag  = flag.Int("chaos.workers", 3, "number of worker hosts")
	tasksFlag    = flag.Int("chaos.tasks", 60, "number of tasks")
)

// bin holds the binaries that TestMain builds once.
var bin cluster.Binaries

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if testing.Short() {
		return m.Run()
	}
	built, remove, err := cluster.BuildTemp("dtf-chaos-bin-", 5*time.Minute)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	bin = built
	return m.Run()
}

// TestChaos runs the task mix under the seeded fault schedule and then
// checks the store. A failure prints the command that repeats the run.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos run takes minutes")
	}
	seed, length := *seedFlag, *durationFlag
	switch {
	case *workersFlag < 1 || *workersFlag > 20:
		t.Fatalf("-chaos.workers=%d is out of range; use 1 to 20", *workersFlag)
	case *tasksFlag < 1 || *tasksFlag > 5000:
		t.Fatalf("-chaos.tasks=%d is out of range; use 1 to 5000", *tasksFlag)
	case length < time.Second || length > time.Hour:
		t.Fatalf("-chaos.duration=%s is out of range; use 1s to 1h", length)
	}
	schedule := NewSchedule(seed, length, *workersFlag)
	t.Cleanup(func() {
		if t.Failed() {
			// The run takes the fault time plus up to 3 minutes for the
			// tasks and the time to start and check the cluster.
			timeout := (length + 5*time.Minute).Round(time.Minute)
			t.Logf("repeat this run: go test ./test/chaos/ -run 'TestChaos$' -timeout %s -chaos.seed=%d "+
				"-chaos.duration=%s -chaos.workers=%d -chaos.tasks=%d",
				timeout, seed, length, *workersFlag, *tasksFlag)
		}
	})

	c := newChaosCluster(t, *workersFlag)
	// The tasks are submitted in waves, one before each fault, so that
	// every fault finds tasks running.
	tasks := taskMix(seed, *tasksFlag)
	batch := fmt.Sprintf("chaos-%d", seed)
	hits := make([]bool, len(schedule))
	for i, f := range schedule {
		c.submit(batch, tasks[i*len(tasks)/len(schedule):(i+1)*len(tasks)/len(schedule)])
		c.waitUntil(f.At)
		hits[i] = c.apply(f)
		t.Logf("fault %s: hit %t", f, hits[i])
	}
	c.healAll()
	t.Logf("faults done after %s; waiting for the tasks", time.Since(c.started).Round(time.Millisecond))

	c.waitTerminal(batch, 3*time.Minute)
	c.stopAll()
	report := c.check(batch)
	t.Logf("checked %d tasks %v, %d attempts, %d resumed from a checkpoint, %d checkpoints stored, "+
		"%d executor reports of the resume point",
		report.Tasks, report.TasksByState, report.Attempts, report.Resumed, report.Checkpoints, report.ExecutorReports)
	assert.Equal(t, *tasksFlag, report.TasksByState["succeeded"],
		"every task has attempts to spare, so every task must succeed")
	assert.Empty(t, MissedKinds(schedule, hits), "fault kinds of the schedule that never hit a target")
	assert.Positive(t, report.Resumed, "no attempt resumed from a checkpoint, so the run did not test resuming")
	checkpointTasks := 0
	for _, spec := range tasks {
		if spec.Type == checkpointTaskType {
			checkpointTasks++
		}
	}
	assert.Equal(t, checkpointTasks, report.ExecutorReports,
		"every checkpoint task's executor report must be compared with the store")
}

// taskMix returns n tasks: shell commands of different lengths and, for
// three in five, executors that save a checkpoint at every step for 3 to
// 12 seconds. The checkpoint tasks run long enough that host and plugin
// kills find them mid-run, so that some attempts resume. Each task may be
// handed out many times, so that the faults never exhaust its attempts.
func taskMix(seed int64, n int) []api.TaskSpec {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x7461736b))
	tasks := make([]api.TaskSpec, 0, n)
	for i := range n {
		var spec api.TaskSpec
		if rng.IntN(5) < 3 {
			steps := 30 + rng.IntN(90)
			payload, _ := json.Marshal(map[string]any{"steps": steps, "interval_ms": 100})
			spec = api.TaskSpec{Name: fmt.Sprintf("checkpoint-%d-steps-%d", i, steps), Type: "checkpoint", Payload: payload}
		} else {
			seconds := 0.1 + 6*rng.Float64()
			argv := []string{"sh", "-c", fmt.Sprintf("sleep %.2f; echo done", seconds)}
			payload, _ := json.Marshal(map[string]any{"argv": argv})
			spec = api.TaskSpec{Name: fmt.Sprintf("command-%d-%.1fs", i, seconds), Type: "command", Payload: payload}
		}
		spec.Timeout = "2m"
		spec.MaxAttempts = 50
		tasks = append(tasks, spec)
	}
	return tasks
}

// chaosCluster is a coordinator and workers, each worker behind its own
// fault proxy, so that a network fault hits one worker.
type chaosCluster struct {
	t           *testing.T
	dir         string
	addr        string
	coordConfig string
	coordinator *cluster.Process
	client      *api.Client
	workers     []*chaosWorker
	started     time.Time
}

type chaosWorker struct {
	id      string
	config  string
	proxy   *faultproxy.Proxy
	process *cluster.Process
}

const chaosToken = "chaos-token"

func newChaosCluster(t *testing.T, workers int) *chaosCluster {
	t.Helper()
	addr, err := cluster.FreeAddr()
	require.NoError(t, err)
	c := &chaosCluster{t: t, dir: t.TempDir(), addr: addr, client: &api.Client{BaseURL: "http://" + addr}}
	c.coordConfig = filepath.Join(c.dir, "coordinator.hcl")
	require.NoError(t, cluster.WriteCoordinatorConfig(c.coordConfig, cluster.CoordinatorConfig{
		Listen:            addr,
		DataDir:           filepath.Join(c.dir, "coordinator"),
		Token:             chaosToken,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		ReassignAfter:     5 * time.Second,
		TaskTypes:         []string{"command", "checkpoint"},
	}))
	t.Cleanup(c.cleanup)
	c.startCoordinator()

	for i := range workers {
		proxy, err := faultproxy.New(addr)
		require.NoError(t, err)
		w := &chaosWorker{id: fmt.Sprintf("worker-%d", i), proxy: proxy}
		w.config = filepath.Join(c.dir, w.id+".hcl")
		require.NoError(t, cluster.WriteWorkerConfig(w.config, cluster.WorkerConfig{
			Bin:               bin,
			URL:               "ws://" + proxy.Addr(),
			WorkerID:          w.id,
			Token:             chaosToken,
			DataDir:           filepath.Join(c.dir, w.id),
			Slots:             3,
			HeartbeatInterval: 500 * time.Millisecond,
			HeartbeatTimeout:  2 * time.Second,
			BackoffBase:       100 * time.Millisecond,
			BackoffCap:        time.Second,
			HealthyAfter:      3 * time.Second,
			Checkpoint:        true,
		}))
		c.workers = append(c.workers, w)
		c.startWorker(w)
	}
	c.waitConnected()
	c.started = time.Now()
	return c
}

func (c *chaosCluster) startCoordinator() {
	c.t.Helper()
	p, err := cluster.Start("coordinator", filepath.Join(c.dir, "coordinator.log"),
		bin.Path("dtf"), []string{"coordinator", "-config", c.coordConfig})
	require.NoError(c.t, err)
	c.coordinator = p
	err = cluster.WaitHealthy(context.Background(), 30*time.Second, "http://"+c.addr)
	require.NoError(c.t, err, "coordinator log:\n%s", tail(p.Log()))
}

func (c *chaosCluster) startWorker(w *chaosWorker) {
	c.t.Helper()
	p, err := cluster.Start(w.id, filepath.Join(c.dir, w.id+".log"), bin.Path("dtf"), []string{"worker", "-config", w.config})
	require.NoError(c.t, err)
	w.process = p
}

// waitConnected waits until every worker is connected.
func (c *chaosCluster) waitConnected() {
	c.t.Helper()
	ctx := context.Background()
	err := cluster.Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		workers, err := c.client.ListWorkers(ctx)
		if err != nil {
			return false, nil
		}
		connected := cluster.ConnectedWorkers(workers)
		for _, w := range c.workers {
			if !connected[w.id] {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(c.t, err, "workers did not connect\n%s", c.logs())
}

// submit adds tasks to the batch; an empty list submits nothing.
func (c *chaosCluster) submit(batch string, tasks []api.TaskSpec) {
	c.t.Helper()
	if len(tasks) == 0 {
		return
	}
	_, err := c.client.Submit(context.Background(), api.SubmitRequest{Batch: batch, Tasks: tasks})
	require.NoError(c.t, err)
}

// waitUntil returns when the schedule's clock reaches at.
func (c *chaosCluster) waitUntil(at time.Duration) {
	if wait := time.Until(c.started.Add(at)); wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		<-timer.C
	}
}

// apply injects one fault and, for faults with a duration, heals it
// after that time. It reports whether the fault hit its target:
//
//   - a cut, blackhole or latency: the worker had a connection open
//     through its proxy;
//   - a coordinator kill: the coordinator ran and had running attempts;
//   - a host kill: the host ran and the coordinator had running attempts
//     on it;
//   - a plugin kill: the host had a child process of the plugin binary,
//     and SIGKILL reached it.
func (c *chaosCluster) apply(f Fault) bool {
	c.t.Helper()
	w := c.workers[f.Worker]
	hit := false
	switch f.Kind {
	case Cut:
		hit = w.proxy.Connections() > 0
		w.proxy.Down(f.For)
	case Blackhole:
		hit = w.proxy.Connections() > 0
		w.proxy.Blackhole(true)
		c.hold(f.For)
		w.proxy.Blackhole(false)
	case Latency:
		hit = w.proxy.Connections() > 0
		w.proxy.Delay(200 * time.Millisecond)
		c.hold(f.For)
		w.proxy.Delay(0)
	case CoordinatorKill:
		hit = running(c.coordinator) && c.runningAttempts("") > 0
		c.coordinator.Kill()
		c.hold(f.For)
		c.startCoordinator()
	case HostKill:
		hit = running(w.process) && c.runningAttempts(w.id) > 0
		w.process.Kill()
		c.hold(f.For)
		c.startWorker(w)
	case PluginKill:
		hit = c.killPlugin(w, f.Plugin)
	}
	return hit
}

// running reports whether the process has not exited.
func running(p *cluster.Process) bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// runningAttempts returns how many attempts the coordinator has running on
// the worker, or on all workers when workerID is empty. It returns 0 when
// the request to the coordinator fails.
func (c *chaosCluster) runningAttempts(workerID string) int {
	tasks, err := c.client.ListTasks(context.Background(), "", api.StateRunning)
	if err != nil {
		c.t.Logf("list running tasks: %v", err)
		return 0
	}
	n := 0
	for _, task := range tasks {
		if workerID == "" || task.WorkerID == workerID {
			n++
		}
	}
	return n
}

// hold lets a fault last d.
func (c *chaosCluster) hold(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// killPlugin sends SIGKILL to the worker's plugin process of that binary
// and reports whether it found and killed one. A host that is just
// restarting may not run it yet; the fault then does nothing, which the
// log shows.
func (c *chaosCluster) killPlugin(w *chaosWorker, binary string) bool {
	pid := cluster.ChildNamed(w.process.Pid(), binary)
	if pid == 0 {
		c.t.Logf("%s of %s not running; nothing to kill", binary, w.id)
		return false
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		c.t.Logf("kill %s of %s (pid %d): %v", binary, w.id, pid, err)
		return false
	}
	return true
}

// healAll ends every fault and makes sure every process runs.
func (c *chaosCluster) healAll() {
	c.t.Helper()
	for _, w := range c.workers {
		w.proxy.Blackhole(false)
		w.proxy.Delay(0)
		w.proxy.Refuse(false)
		select {
		case <-w.process.Done():
			c.startWorker(w)
		default:
		}
	}
	select {
	case <-c.coordinator.Done():
		c.startCoordinator()
	default:
	}
	c.waitConnected()
}

// waitTerminal waits until every task of the batch ended.
func (c *chaosCluster) waitTerminal(batch string, timeout time.Duration) {
	c.t.Helper()
	ctx := context.Background()
	var pending []string
	err := cluster.Poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
		tasks, err := c.client.ListTasks(ctx, batch, "")
		if err != nil {
			return false, nil
		}
		pending = pending[:0]
		for _, task := range tasks {
			if !api.Terminal(task.State) {
				pending = append(pending, fmt.Sprintf("%s %s (%s, attempt %d)", task.ID, task.Name, task.State, task.Attempt))
			}
		}
		return len(tasks) > 0 && len(pending) == 0, nil
	})
	require.NoError(c.t, err, "tasks not finished: %s\n%s", strings.Join(pending, ", "), c.logs())
}

// stopAll stops the workers and then the coordinator gracefully, so that
// the store is complete and closed when Check reads it.
func (c *chaosCluster) stopAll() {
	c.t.Helper()
	for _, w := range c.workers {
		if err := w.process.Stop(20 * time.Second); err != nil {
			c.t.Logf("stop %s: %v", w.id, err)
		}
	}
	require.NoError(c.t, c.coordinator.Stop(20*time.Second), "stop coordinator")
}

func (c *chaosCluster) check(batch string) *Report {
	c.t.Helper()
	report, err := Check(context.Background(), filepath.Join(c.dir, "coordinator", "coordinator.db"), batch)
	require.NoError(c.t, err)
	for _, v := range report.Violations {
		c.t.Errorf("invariant broken: %s", v)
	}
	return report
}

func (c *chaosCluster) cleanup() {
	for _, w := range c.workers {
		if w.process != nil {
			_ = w.process.Stop(10 * time.Second)
		}
		w.proxy.Close()
	}
	if c.coordinator != nil {
		_ = c.coordinator.Stop(10 * time.Second)
	}
	if c.t.Failed() {
		c.t.Log(c.logs())
	}
}

func (c *chaosCluster) logs() string {
	out := "--- coordinator\n" + tail(c.coordinator.Log())
	for _, w := range c.workers {
		if w.process != nil {
			out += "--- " + w.id + "\n" + tail(w.process.Log())
		}
	}
	return out
}

func tail(s string) string {
	const keep = 4000
	if len(s) > keep {
		return "..." + s[len(s)-keep:]
	}
	return s
}
