package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/test/cluster"
)

// upgradeTraffic is the steady task traffic of the upgrade tests: tasks of
// the example checkpoint executor, each reporting a numbered progress
// line on odd steps and saving a checkpoint on even steps.
type upgradeTraffic struct {
	tasks      int
	steps      int
	intervalMS int
}

// upgradeWorker is a worker whose reconnection plugin binary lives at a
// path that the test replaces, as an operator ships a new release.
type upgradeWorker struct {
	id      string
	config  string
	plugin  string
	cfg     cluster.WorkerConfig
	process *cluster.Process
}

// buildTestPlugin compiles a plugin binary that only tests use, from a
// package under test/plugins, into dir.
func buildTestPlugin(t *testing.T, dir, name string) string {
	t.Helper()
	root, err := cluster.RepoRoot()
	require.NoError(t, err)
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./test/plugins/"+name)
	cmd.Dir = root
	output, err := cmd.CombinedOutput()
	require.NoError(t, err, "build test plugin %s: %s", name, output)
	return out
}

// installFile copies src to dst through a temporary file and a rename, so
// that a worker never launches a half-written binary.
func installFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	tmp := dst + ".new"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	require.NoError(t, os.Rename(tmp, dst))
}

func fileChecksum(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// newUpgradeEnv starts a coordinator that logs every task frame at trace
// level and accepts checkpoint tasks.
func newUpgradeEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, func(c *cluster.CoordinatorConfig) {
		c.LogLevel = "trace"
		c.TaskTypes = append(c.TaskTypes, "checkpoint")
	})
}

// startUpgradeWorker starts a worker with the checkpoint executor whose
// reconnection plugin is a copy of initial in the test's own folder.
func (e *env) startUpgradeWorker(id, initial string, slots int) *upgradeWorker {
	e.t.Helper()
	w := &upgradeWorker{
		id:     id,
		config: filepath.Join(e.dir, id+".hcl"),
		plugin: filepath.Join(e.dir, id+"-plugins", "dtf-reconnection"),
	}
	require.NoError(e.t, os.MkdirAll(filepath.Dir(w.plugin), 0o755))
	installFile(e.t, initial, w.plugin)
	w.cfg = cluster.WorkerConfig{
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
		ReconnectionPath:  w.plugin,
	}
	e.writeUpgradeConfig(w)
	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"), bin.Path("dtf"),
		[]string{"worker", "-config", w.config})
	require.NoError(e.t, err)
	w.process = p
	e.workers[id] = p
	return w
}

// writeUpgradeConfig writes the worker's config file from w.cfg with the
// checkpoint executor.
func (e *env) writeUpgradeConfig(w *upgradeWorker) {
	e.t.Helper()
	require.NoError(e.t, cluster.WriteWorkerConfig(w.config, w.cfg))
	f, err := os.OpenFile(w.config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(e.t, err)
	_, err = fmt.Fprintf(f, checkpointPlugin, bin.Path("dtf-exec-checkpoint"))
	require.NoError(e.t, err)
	require.NoError(e.t, f.Close())
}

// reload runs `dtf worker reload` for the worker, as an operator does.
func (e *env) reload(w *upgradeWorker) {
	e.t.Helper()
	out, err := exec.Command(bin.Path("dtf"), "worker", "reload", "-config", w.config).CombinedOutput()
	require.NoError(e.t, err, "dtf worker reload: %s", out)
	require.Contains(e.t, string(out), "sent SIGHUP to worker pid")
}

// waitLogCount waits until the worker's log contains message at least n
// times.
func (e *env) waitLogCount(w *upgradeWorker, message string, n int) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		return strings.Count(w.process.Log(), message) >= n, nil
	})
	require.NoError(e.t, err, "worker log has fewer than %d lines %q\n%s", n, message, e.logs())
}

// waitCoordinatorLog waits until the coordinator's log contains message at
// least n times.
func (e *env) waitCoordinatorLog(message string, n int) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		return strings.Count(e.coordinator.Log(), message) >= n, nil
	})
	require.NoError(e.t, err, "coordinator log has fewer than %d lines %q", n, message)
}

// submitTraffic submits the traffic's checkpoint tasks and returns the
// batch.
func (e *env) submitTraffic(traffic upgradeTraffic) string {
	e.t.Helper()
	req := api.SubmitRequest{}
	for i := range traffic.tasks {
		payload, err := json.Marshal(map[string]any{
			"steps": traffic.steps, "interval_ms": traffic.intervalMS, "checkpoint_every": 2,
		})
		require.NoError(e.t, err)
		req.Tasks = append(req.Tasks, api.TaskSpec{
			Name: fmt.Sprintf("stream-%d", i), Type: "checkpoint", Payload: payload, Timeout: "5m",
		})
	}
	resp, err := e.client.Submit(context.Background(), req)
	require.NoError(e.t, err)
	return resp.Batch
}

// coordinatorFrame is one task frame that the coordinator logged.
type coordinatorFrame struct {
	at      time.Time
	taskID  string
	message string
}

var (
	logTime     = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\d{4}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)`)
	logTaskID   = regexp.MustCompile(`task_id=(\S+)`)
	logMessage  = regexp.MustCompile(`message="([^"]*)"`)
	logSequence = regexp.MustCompile(`sequence=(\d+)`)
)

// parseLogTime reads the timestamp at the start of an hclog line.
func parseLogTime(line string) (time.Time, bool) {
	match := logTime.FindString(line)
	if match == "" {
		return time.Time{}, false
	}
	for _, layout := range []string{"2006-01-02T15:04:05.000Z0700", "2006-01-02T15:04:05.000Z"} {
		if at, err := time.Parse(layout, match); err == nil {
			return at, true
		}
	}
	return time.Time{}, false
}

// coordinatorFrames returns the task progress and stored checkpoint frames
// that the coordinator logged at trace level, in log order.
func coordinatorFrames(log string) (progress, checkpoints []coordinatorFrame) {
	for _, line := range strings.Split(log, "\n") {
		isProgress := strings.Contains(line, "task progress")
		isCheckpoint := strings.Contains(line, "checkpoint stored")
		if !isProgress && !isCheckpoint {
			continue
		}
		at, ok := parseLogTime(line)
		if !ok {
			continue
		}
		frame := coordinatorFrame{at: at}
		if m := logTaskID.FindStringSubmatch(line); m != nil {
			frame.taskID = m[1]
		}
		if isProgress {
			if m := logMessage.FindStringSubmatch(line); m != nil {
				frame.message = m[1]
			}
			progress = append(progress, frame)
			continue
		}
		if m := logSequence.FindStringSubmatch(line); m != nil {
			frame.message = m[1]
		}
		checkpoints = append(checkpoints, frame)
	}
	return progress, checkpoints
}

// requireTrafficDeliveredOnce checks every frame of the traffic at both
// ends: each task ran once, at the coordinator each progress line and each
// checkpoint arrived exactly once and in order, and at the worker each
// assignment and each outcome acknowledgement arrived exactly once.
func (e *env) requireTrafficDeliveredOnce(w *upgradeWorker, traffic upgradeTraffic, tasks []api.Task) {
	e.t.Helper()
	e.requireExactlyOnce(tasks)
	progress, _ := coordinatorFrames(e.coordinator.Log())
	lines := map[string][]string{}
	for _, f := range progress {
		lines[f.taskID] = append(lines[f.taskID], f.message)
	}
	var want []string
	for step := 1; step <= traffic.steps; step += 2 {
		want = append(want, fmt.Sprintf("step %d of %d", step, traffic.steps))
	}

	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(e.coordCfg.DataDir, coordinator.StoreFile))
	require.NoError(e.t, err)
	defer st.Close()
	workerLog := w.process.Log()
	for _, task := range tasks {
		assert.Equal(e.t, want, lines[task.ID], "progress lines of task %s at the coordinator", task.ID)

		history, err := st.CheckpointHistory(ctx, task.ID)
		require.NoError(e.t, err)
		sequences := make([]uint64, 0, len(history))
		for _, c := range history {
			assert.Equal(e.t, 1, c.Attempt, "checkpoint attempt of task %s", task.ID)
			sequences = append(sequences, c.Sequence)
		}
		wantSequences := make([]uint64, 0, traffic.steps/2)
		for seq := uint64(1); seq <= uint64(traffic.steps/2); seq++ {
			wantSequences = append(wantSequences, seq)
		}
		assert.Equal(e.t, wantSequences, sequences, "stored checkpoints of task %s", task.ID)

		assigned := regexp.MustCompile(`task assigned.*task_id=` + regexp.QuoteMeta(task.ID) + `\b`)
		assert.Len(e.t, assigned.FindAllString(workerLog, -1), 1, "assignments of task %s at the worker", task.ID)
		acked := regexp.MustCompile(`outcome acknowledged.*task_id=` + regexp.QuoteMeta(task.ID) + `\b`)
		assert.Len(e.t, acked.FindAllString(workerLog, -1), 1, "outcome acknowledgements of task %s at the worker",
			task.ID)
	}
}

// upgradeRoundsEnv sets the number of upgrades of
// TestUpgradeConnectorUnderTraffic, 3 by default. With more rounds the test
// is the load mode whose delivery gaps docs/benchmarks.md records.
const upgradeRoundsEnv = "DTF_UPGRADE_ROUNDS"

// TestUpgradeConnectorUnderTraffic replaces the reconnection plugin of a
// worker several times while four tasks stream progress lines and
// checkpoints, and checks that no frame was lost or doubled in either
// direction. It logs the delivery gap of each swap: the time between the
// last task frame that the coordinator handled before the resumed session
// and the first one after it.
func TestUpgradeConnectorUnderTraffic(t *testing.T) {
	upgrades := 3
	if value := os.Getenv(upgradeRoundsEnv); value != "" {
		n, err := strconv.Atoi(value)
		require.NoError(t, err, "%s=%q: expected a number of upgrades", upgradeRoundsEnv, value)
		require.True(t, n >= 1 && n <= 100, "%s=%d: expected 1 to 100 upgrades", upgradeRoundsEnv, n)
		upgrades = n
	}
	e := newUpgradeEnv(t)
	w := e.startUpgradeWorker("upgrade-1", bin.Path("dtf-reconnection"), 4)
	e.waitConnected(w.id)

	// Each task reports every 10 ms, so the coordinator handles about 400
	// frames a second, and the steps last past the last upgrade.
	traffic := upgradeTraffic{tasks: 4, steps: 200 + 100*upgrades, intervalMS: 10}
	batch := e.submitTraffic(traffic)
	e.waitRunning(batch, traffic.tasks)

	// The upgrades are spread over the run: each waits for 40 more
	// progress lines at the coordinator, a fifth of a second of traffic.
	for i := 1; i <= upgrades; i++ {
		e.waitCoordinatorLog("task progress", strings.Count(e.coordinator.Log(), "task progress")+40)
		installFile(t, bin.Path("dtf-reconnection"), w.plugin)
		e.reload(w)
		e.waitLogCount(w, "connector plugin upgraded", i)
	}
	log := w.process.Log()
	assert.Equal(t, upgrades, strings.Count(log, "handed_over=true"), "upgrades that handed over the session")
	assert.NotContains(t, log, "connector plugin upgrade failed")
	assert.NotContains(t, log, "connector plugin stopped, restarting it")

	tasks := e.waitTerminal(batch, 2*time.Minute)
	e.requireTrafficDeliveredOnce(w, traffic, tasks)

	gaps := swapGaps(e.coordinator.Log())
	require.Len(t, gaps, upgrades, "welcomes at the coordinator during the traffic")
	for i, gap := range gaps {
		t.Logf("upgrade %d: delivery gap at the coordinator %s", i+1, gap)
	}
	for i, line := range linesWith(w.process.Log(), "connector plugin upgraded") {
		pause := regexp.MustCompile(`export_time=(\S+)`).FindStringSubmatch(line)
		if pause != nil {
			t.Logf("upgrade %d: the old plugin exported its session %s after the senders paused", i+1, pause[1])
		}
	}
	sorted := slices.Sorted(slices.Values(gaps))
	t.Logf("delivery gap over %d upgrades: median %s, max %s", upgrades, sorted[len(sorted)/2],
		sorted[len(sorted)-1])
}

// swapGaps returns, for each welcome after the first task frame in a
// coordinator log, the time from the last task frame handled before the
// welcome to the first one after it. The times have the log's millisecond
// resolution.
func swapGaps(log string) []time.Duration {
	var gaps []time.Duration
	var last time.Time
	resumed := false
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, "frame sent") && strings.Contains(line, "type=welcome"):
			// The coordinator's "worker resumed its session" line is rate
			// limited, its trace line of each welcome is not.
			resumed = true
		case strings.Contains(line, "task progress"), strings.Contains(line, "checkpoint stored"):
			at, ok := parseLogTime(line)
			if !ok {
				continue
			}
			if resumed && !last.IsZero() {
				gaps = append(gaps, at.Sub(last))
			}
			resumed = false
			last = at
		}
	}
	return gaps
}

// TestUpgradeBetweenConnectorAPIVersions runs a worker on a connector that
// serves only API version 1 and upgrades it, under task traffic, to the
// current plugin and back. Neither upgrade hands the session over, because
// one side speaks version 1. Every task must still run once, with one
// outcome.
func TestUpgradeBetweenConnectorAPIVersions(t *testing.T) {
	v1 := buildTestPlugin(t, t.TempDir(), "reconnection-v1")
	e := newUpgradeEnv(t)
	w := e.startUpgradeWorker("upgrade-v1", v1, 2)
	e.waitConnected(w.id)
	require.Contains(t, w.process.Log(), "version=v1-test", "the worker did not start on the version 1 plugin")

	traffic := upgradeTraffic{tasks: 2, steps: 160, intervalMS: 25}
	batch := e.submitTraffic(traffic)
	e.waitRunning(batch, traffic.tasks)

	installFile(t, bin.Path("dtf-reconnection"), w.plugin)
	e.reload(w)
	e.waitLogCount(w, "connector plugin upgraded", 1)
	assert.Contains(t, w.process.Log(), "old_api_version=1 api_version=2 handover=false")
	e.waitConnected(w.id)

	installFile(t, v1, w.plugin)
	e.reload(w)
	e.waitLogCount(w, "connector plugin upgraded", 2)
	assert.Contains(t, w.process.Log(), "old_api_version=2 api_version=1 handover=false")

	tasks := e.waitTerminal(batch, 2*time.Minute)
	e.requireExactlyOnce(tasks)
	e.requireCheckpointsForward(tasks[0].ID)
}

// TestFailedUpgradesKeepOldPlugin tries three broken upgrades of a running
// worker: a sha256 in the config that does not match the binary, a binary
// that crashes at start, and a plugin with no API version in common with
// the host. Each leaves the worker connected on its old plugin process,
// with one log line that names the reason, and a task submitted afterwards
// runs.
func TestFailedUpgradesKeepOldPlugin(t *testing.T) {
	dir := t.TempDir()
	crashing := buildTestPlugin(t, dir, "crashing")
	future := buildTestPlugin(t, dir, "reconnection-future")
	e := newUpgradeEnv(t)
	w := e.startUpgradeWorker("upgrade-fail", bin.Path("dtf-reconnection"), 1)
	e.waitConnected(w.id)
	good := w.cfg

	cases := []struct {
		name   string
		change func()
		reason string
	}{
		{
			name: "checksum mismatch",
			change: func() {
				w.cfg.ReconnectionSHA256 = strings.Repeat("ab", 32)
				e.writeUpgradeConfig(w)
			},
			reason: "plugin binary checksum mismatch for reconnection",
		},
		{
			name:   "crash at start",
			change: func() { installFile(t, crashing, w.plugin) },
			reason: "printed nothing on stdout and exited, so it did not serve the go-plugin handshake",
		},
		{
			name:   "no shared API version",
			change: func() { installFile(t, future, w.plugin) },
			reason: "serves connector plugin API version 99, and this host supports connector plugin API versions 1, 2",
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.change()
			e.reload(w)
			e.waitLogCount(w, "connector plugin upgrade failed, keeping the current plugin", i+1)
			line := lastLineWith(w.process.Log(), "connector plugin upgrade failed")
			assert.Contains(t, line, c.reason)

			// Restore the good binary and config, then check that the old
			// plugin still carries the session.
			installFile(t, bin.Path("dtf-reconnection"), w.plugin)
			w.cfg = good
			e.writeUpgradeConfig(w)
			e.waitConnected(w.id)
			batch := e.submitTraffic(upgradeTraffic{tasks: 1, steps: 4, intervalMS: 1})
			e.requireExactlyOnce(e.waitTerminal(batch, time.Minute))
		})
	}
	log := w.process.Log()
	assert.NotContains(t, log, "connector plugin upgraded")
	assert.NotContains(t, log, "connector plugin stopped, restarting it")
	assert.Equal(t, 1, strings.Count(log, "connected to coordinator"), "the worker reconnected\n%s", log)
}

// lastLineWith returns the last line of log that contains message.
func lastLineWith(log, message string) string {
	lines := linesWith(log, message)
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

// linesWith returns the lines of log that contain message.
func linesWith(log, message string) []string {
	var lines []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, message) {
			lines = append(lines, line)
		}
	}
	return lines
}

// TestWorkerReloadWithoutWorker checks that `dtf worker reload` fails with
// a message that no worker runs on the config's data_dir.
func TestWorkerReloadWithoutWorker(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "worker.hcl")
	require.NoError(t, cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
		Bin: bin, URL: "ws://127.0.0.1:1", WorkerID: "idle", Token: token, DataDir: filepath.Join(dir, "data"),
		Slots: 1, HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second,
		BackoffBase: 100 * time.Millisecond, BackoffCap: time.Second, HealthyAfter: time.Second,
	}))
	out, err := exec.Command(bin.Path("dtf"), "worker", "reload", "-config", config).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "no worker runs on data_dir "+filepath.Join(dir, "data"))
}
