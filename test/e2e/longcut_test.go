package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// The long cut tests give a worker a replay buffer and a send queue far
// smaller than the outcomes it produces while its link is down. Most
// outcomes are therefore not accepted by the reconnection plugin and wait
// only in the host's outbox.
const (
	// longcutTasks run at once, one per slot, and all finish during the cut.
	longcutTasks = 32
	// longcutFillBytes of filler precede each task's closing line, so each
	// output is just under the command executor's 1 MiB output limit.
	longcutFillBytes = 1<<20 - 64
	// longcutStagger spaces the ends of the tasks, so that the host
	// receives one output at a time and its memory shows what it keeps,
	// not what arrives at once.
	longcutStagger = 200 * time.Millisecond
	// longcutReplayFrames, longcutReplayBytes and longcutQueueFrames bound
	// the plugin's buffers to two or three outcomes of this size.
	longcutReplayFrames = 8
	longcutReplayBytes  = 2 << 20
	longcutQueueFrames  = 4
	// longcutSendTimeout is the plugin's send_timeout: how long a Send
	// waits for room in a full queue before the host retries it later.
	longcutSendTimeout = "2s"
	// longcutCooldown replaces the plugin's circuit breaker cooldown of
	// 30s. The refused dials of the cut open the breaker, and the default
	// cooldown could keep the worker away past the coordinator's
	// reassign_after of 20s, which would requeue its tasks.
	longcutCooldown = "1s"
	// longcutExpiredTTL is the coordinator's session_ttl in the subtest
	// where the session expires during the cut.
	longcutExpiredTTL = 3 * time.Second
	// longcutMaxRSS bounds the worker host's peak resident memory (VmHWM).
	// The outputs held during the cut add up to 32 MiB. Measured on a
	// 2-core Linux VM with go1.26.8, the host peaked at 42 to 57 MiB, and
	// a build that kept held outcomes in memory peaked at 96 to 103 MiB.
	longcutMaxRSS = 72 << 20
	// longcutMaxPluginRSS bounds the reconnection plugin's peak resident
	// memory. Its replay buffer and send queue hold at most about 6 MiB of
	// outcomes here, however long the cut. Measured on the same VM, the
	// plugin peaked at 47.6 to 48.4 MiB, while the 32 MiB of outcomes
	// held by a plugin without these bounds would add their size and the
	// copies made while encoding them.
	longcutMaxPluginRSS = 72 << 20
)

// A worker cut off while every running task finishes ends up holding every
// outcome on disk. After the link comes back, each task has exactly one
// applied outcome with its full output, whether the session resumes or
// expired and the worker syncs its state, and the host's memory stays
// bounded.
func TestLongCutOutcomes(t *testing.T) {
	cases := []struct {
		name string
		// expire makes the cut outlast the coordinator's session_ttl.
		expire bool
	}{
		{name: "session resumed", expire: false},
		{name: "session expired", expire: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			longcutRun(t, tc.expire)
		})
	}
}

func longcutRun(t *testing.T, expire bool) {
	e := newEnv(t)
	if expire {
		longcutSetSessionTTL(e, longcutExpiredTTL)
	}
	const id = "worker-longcut"
	worker := longcutStartWorker(e, id)
	e.waitConnected(id)

	gate := filepath.Join(e.dir, "gate")
	batch, want := longcutSubmit(e, gate)
	e.waitRunning(batch, longcutTasks)

	before := longcutPeakRSS(t, worker.Pid())

	// Cut the link and keep it down, then let every task finish.
	e.proxy.Refuse(true)
	e.proxy.Cut()
	e.waitDisconnected(id)
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	e.waitOutbox(id, longcutTasks)
	longcutWaitLog(e, worker, "connector did not accept a held outcome")
	if expire {
		longcutWaitLog(e, e.coordinator, "session expired")
	}
	e.proxy.Refuse(false)

	tasks := e.waitTerminal(batch, 3*time.Minute)
	require.Len(t, tasks, longcutTasks)
	e.requireExactlyOnce(tasks)
	for _, task := range tasks {
		output := task.Outcome.Output
		assert.Equal(t, longcutFillBytes+len(want[task.Name]), len(output), "task %s output length", task.Name)
		assert.True(t, strings.HasSuffix(output, want[task.Name]), "task %s output ends with %q",
			task.Name, want[task.Name])
	}
	longcutWaitOutboxEmpty(e, id)

	log := worker.Log()
	syncs := strings.Count(log, "state sync sent")
	if expire {
		// A loaded machine may drop the new session once more, and the
		// worker then resumes it. Only the reconnect after the cut must
		// have started a new session.
		assert.GreaterOrEqual(t, syncs, 2, "the first session and the one after the expiry each sync")
		assert.LessOrEqual(t, syncs, 3, "no loop of new sessions after the cut")
		secondSync := nthIndex(log, "state sync sent", 2)
		if resumed := strings.Index(log, "resumed session with coordinator"); resumed >= 0 {
			assert.Greater(t, resumed, secondSync, "the worker resumed the expired session")
		}
	} else {
		assert.Equal(t, 1, syncs, "a resumed session needs no state sync")
		assert.Contains(t, log, "resumed session with coordinator")
		// Without a new session, nothing gives the host a reason to send an
		// outcome twice, so the coordinator receives no duplicate.
		assert.Zero(t, strings.Count(e.coordinator.Log(), "outcome rejected"), "duplicate outcomes")
	}

	peak := longcutPeakRSS(t, worker.Pid())
	t.Logf("worker host peak RSS %.1f MiB before the cut, %.1f MiB at the end; %d outcomes of %d KiB held",
		float64(before)/(1<<20), float64(peak)/(1<<20), longcutTasks, longcutFillBytes>>10)
	assert.Less(t, peak, int64(longcutMaxRSS), "worker host peak RSS")

	plugin := cluster.ChildNamed(worker.Pid(), "dtf-reconnection")
	require.NotZero(t, plugin, "no dtf-reconnection child of the worker host")
	pluginPeak := longcutPeakRSS(t, plugin)
	t.Logf("reconnection plugin peak RSS %.1f MiB", float64(pluginPeak)/(1<<20))
	assert.Less(t, pluginPeak, int64(longcutMaxPluginRSS), "reconnection plugin peak RSS")
}

// longcutSubmit submits longcutTasks tasks that wait for the gate file,
// then print longcutFillBytes of filler and a closing line that names the
// task. It returns the batch and each task's closing line by task name.
func longcutSubmit(e *env, gate string) (string, map[string]string) {
	e.t.Helper()
	argvs := make([][]string, longcutTasks)
	want := make(map[string]string, longcutTasks)
	for i := range argvs {
		closing := fmt.Sprintf("longcut task %02d done\n", i)
		want[fmt.Sprintf("task-%d", i)] = closing
		// The wait is bounded: 2400 polls of 50 ms are two minutes. The
		// stagger spreads the outputs over about six seconds.
		script := fmt.Sprintf("n=0; while [ ! -e %q ] && [ $n -lt 2400 ]; do sleep 0.05; n=$((n+1)); done; "+
			"sleep %.1f; head -c %d /dev/zero | tr '\\0' x; printf 'longcut task %02d done\\n'",
			gate, longcutStagger.Seconds()*float64(i), longcutFillBytes, i)
		argvs[i] = []string{"sh", "-c", script}
	}
	return e.submitCommands(argvs...), want
}

// longcutStartWorker starts a worker as env.startWorker does, with
// longcutTasks slots and the small replay buffer and send queue of these
// tests.
func longcutStartWorker(e *env, id string) *cluster.Process {
	e.t.Helper()
	return e.startWorkerWith(id, longcutTasks, map[string]string{
		"replay_buffer_frames": strconv.Itoa(longcutReplayFrames),
		"replay_buffer_bytes":  strconv.Itoa(longcutReplayBytes),
		"send_queue_frames":    strconv.Itoa(longcutQueueFrames),
		"send_timeout":         strconv.Quote(longcutSendTimeout),
		"circuit_cooldown":     strconv.Quote(longcutCooldown),
	})
}

// longcutSetSessionTTL restarts the coordinator of e with session_ttl set
// to ttl.
func longcutSetSessionTTL(e *env, ttl time.Duration) {
	e.t.Helper()
	e.coordCfg.SessionTTL = ttl
	require.NoError(e.t, cluster.WriteCoordinatorConfig(e.coordConfig, e.coordCfg))
	require.NoError(e.t, e.coordinator.Stop(10*time.Second))
	e.startCoordinator()
}

// longcutWaitOutboxEmpty waits until the worker's outbox contains no outcome.
func longcutWaitOutboxEmpty(e *env, id string) {
	e.t.Helper()
	pattern := filepath.Join(e.dir, id, "outbox", "*.json")
	err := cluster.Poll(context.Background(), time.Minute, 50*time.Millisecond, func() (bool, error) {
		matches, err := filepath.Glob(pattern)
		return len(matches) == 0, err
	})
	require.NoError(e.t, err, "outbox of %s not emptied\n%s", id, e.logs())
}

// longcutWaitLog waits until the process has logged text.
func longcutWaitLog(e *env, p *cluster.Process, text string) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), time.Minute, 50*time.Millisecond, func() (bool, error) {
		return strings.Contains(p.Log(), text), nil
	})
	require.NoError(e.t, err, "%s did not log %q\n%s", p.Name, text, e.logs())
}

// longcutPeakRSS returns the peak resident set size (VmHWM) of a process
// in bytes, from /proc/PID/status.
func longcutPeakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	file, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	defer file.Close()
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) == 3 && fields[0] == "VmHWM:" && fields[2] == "kB" {
			kib, err := strconv.ParseInt(fields[1], 10, 64)
			require.NoError(t, err)
			return kib << 10
		}
	}
	require.NoError(t, scanner.Err())
	t.Fatalf("no VmHWM line in /proc/%d/status", pid)
	return 0
}

// nthIndex returns the index of the nth occurrence of sub in s, counting
// from 1, or -1.
func nthIndex(s, sub string, n int) int {
	at := -1
	for range n {
		next := strings.Index(s[at+1:], sub)
		if next < 0 {
			return -1
		}
		at += 1 + next
	}
	return at
}
