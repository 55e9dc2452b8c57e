package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// Shape of the fault subtests. Each task prints numbered lines, one every
// faultLineGap seconds. The first batch runs for about four seconds, so a
// fault that starts once it runs hits it mid-task. The second batch is
// submitted during the fault and has more tasks than free slots, so
// assignments, outcomes and acknowledgements keep crossing the faulty link.
const (
	faultSlots       = 4
	faultFirstTasks  = 4
	faultFirstLines  = 40
	faultSecondTasks = 12
	faultSecondLines = 10
	faultLineGap     = "0.1"
	faultTaskWait    = time.Minute
)

// faultWorkers are the workers of every fault subtest. Both dial the same
// proxy, so a fault hits more than one session at a time.
var faultWorkers = []string{"worker-1", "worker-2"}

// faultCase is one network or coordinator fault. inject starts the fault,
// submits the second batch while the fault is in force, and heals the fault
// before it returns.
type faultCase struct {
	name   string
	inject func(r *faultRun)
	// breaksLink is true when the fault ends every open connection, so that
	// each worker has to dial the proxy again.
	breaksLink bool
}

// faultRun is the cluster and the batches of one fault subtest.
type faultRun struct {
	*env
	first      string
	firstWant  map[string]string
	firstTasks []string
	second     string
	secondWant map[string]string
}

// Each fault hits running tasks, and more tasks are submitted while it is
// in force. Once it is healed, every worker is connected again without
// help and every task succeeded once with its whole output in order. No
// process panicked or reported a data race.
func TestFaultsMidTask(t *testing.T) {
	cases := []faultCase{
		{name: "cut", inject: faultCut, breaksLink: true},
		{name: "reset", inject: faultReset, breaksLink: true},
		{name: "blackhole", inject: faultBlackhole, breaksLink: true},
		{name: "latency", inject: faultLatency},
		{name: "throttle", inject: faultThrottle},
		{name: "close_after_upgrade", inject: faultCloseAfterUpgrade, breaksLink: true},
		{name: "flapping_link", inject: faultFlapping, breaksLink: true},
		{name: "graceful_restart", inject: faultGracefulRestart, breaksLink: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runFaultCase(t, tc)
		})
	}
}

func runFaultCase(t *testing.T, tc faultCase) {
	r := &faultRun{env: newEnv(t)}
	for _, id := range faultWorkers {
		faultStartWorker(r.env, id)
	}
	r.waitConnected(faultWorkers...)

	// Start the first batch and let the fault hit it while it runs.
	r.first, r.firstWant = faultSubmit(r.env, "first", faultFirstTasks, faultFirstLines)
	r.waitRunning(r.first, faultFirstTasks)
	tasks, err := r.client.ListTasks(context.Background(), r.first, "")
	require.NoError(t, err)
	for _, task := range tasks {
		r.firstTasks = append(r.firstTasks, task.ID)
	}
	acceptedBefore := r.proxy.Accepted()

	tc.inject(r)
	require.NotEmpty(t, r.second, "the fault did not submit the second batch")

	// Nothing restarts the workers, so they must reconnect by themselves.
	r.waitConnected(faultWorkers...)
	for id, w := range r.workers {
		select {
		case <-w.Done():
			t.Fatalf("worker %s exited during the fault\n%s", id, r.logs())
		default:
		}
	}
	if tc.breaksLink {
		assert.GreaterOrEqual(t, r.proxy.Accepted(), acceptedBefore+uint64(len(faultWorkers)),
			"each worker dials the proxy again after the fault")
	}

	faultRequireOutputs(r.env, r.first, r.firstWant)
	faultRequireOutputs(r.env, r.second, r.secondWant)
	faultRequireStartedOnce(r.env, r.first, r.second)
	faultWaitOutboxesEmpty(r.env)
	faultRequireCleanLogs(r.env)
}

// submitSecond submits the second batch. Each fault calls it while the
// fault is in force.
func (r *faultRun) submitSecond() {
	r.second, r.secondWant = faultSubmit(r.env, "second", faultSecondTasks, faultSecondLines)
}

// firstFinished reports whether a worker has finished every task of the
// first batch.
func (r *faultRun) firstFinished() bool {
	finished := faultLoggedTasks(r.env, faultFinishedPattern)
	for _, id := range r.firstTasks {
		if finished[id] == 0 {
			return false
		}
	}
	return true
}

// hold keeps a fault in force for at least minimum and until the first
// batch has finished, so that its outcomes meet the fault. The length of
// a fault is part of the scenario, not a wait for a result.
func (r *faultRun) hold(minimum time.Duration) {
	r.t.Helper()
	start := time.Now()
	err := cluster.Poll(context.Background(), minimum+faultTaskWait, 50*time.Millisecond, func() (bool, error) {
		return time.Since(start) >= minimum && r.firstFinished(), nil
	})
	require.NoError(r.t, err, "the first batch did not finish while the fault was in force\n%s", r.logs())
}

// faultCircuitCooldown replaces the reconnection plugin's default circuit
// breaker cooldown of 30 s. The close-after-upgrade fault fails ten or more
// dials in a row with the tests' backoff of 100 ms to 1 s, which opens the
// breaker. A short cooldown keeps the breaker in play and the subtest short.
const faultCircuitCooldown = "2s"

// faultStartWorker starts a worker configured as env.startWorker does, with
// faultSlots slots and a circuit breaker cooldown of faultCircuitCooldown.
func faultStartWorker(e *env, id string) {
	e.t.Helper()
	e.startWorkerWith(id, faultSlots, map[string]string{"circuit_cooldown": strconv.Quote(faultCircuitCooldown)})
}

// faultSubmit submits count tasks that each print `lines` numbered lines
// naming the label and the task. It returns the batch and the expected
// output of each task name.
func faultSubmit(e *env, label string, count, lines int) (string, map[string]string) {
	e.t.Helper()
	argvs := make([][]string, count)
	want := make(map[string]string, count)
	for i := range argvs {
		tag := fmt.Sprintf("%s-%d", label, i)
		script := fmt.Sprintf(
			"i=1; while [ $i -le %d ]; do printf '%%s line %%02d of %%d\\n' %s $i %d; "+
				"i=$((i+1)); sleep %s; done",
			lines, tag, lines, faultLineGap)
		argvs[i] = []string{"sh", "-c", script}

		var output strings.Builder
		for n := 1; n <= lines; n++ {
			fmt.Fprintf(&output, "%s line %02d of %d\n", tag, n, lines)
		}
		// submitCommands names the task of argvs[i] "task-i".
		want[fmt.Sprintf("task-%d", i)] = output.String()
	}
	return e.submitCommands(argvs...), want
}

// faultRequireOutputs waits for the batch to end and checks that each task
// succeeded once, on its first attempt, with exactly its expected output.
func faultRequireOutputs(e *env, batch string, want map[string]string) {
	e.t.Helper()
	tasks := e.waitTerminal(batch, faultTaskWait)
	require.Len(e.t, tasks, len(want), "tasks of batch %s", batch)
	e.requireExactlyOnce(tasks)
	for _, task := range tasks {
		// Faults far shorter than reassign_after must not hand a task out
		// a second time.
		assert.Len(e.t, task.Attempts, 1, "task %s (%s) attempts: %+v", task.ID, task.Name, task.Attempts)
		expected, ok := want[task.Name]
		require.True(e.t, ok, "unexpected task name %q", task.Name)
		assert.Equal(e.t, expected, task.Outcome.Output, "output of task %s (%s)", task.ID, task.Name)
	}
}

// Worker host log lines for an assignment that it starts and for an attempt
// that it finished. A repeated assignment is logged differently.
var (
	faultStartedPattern  = regexp.MustCompile(`task assigned: .*\btask_id=(\S+)`)
	faultFinishedPattern = regexp.MustCompile(`task finished: .*\btask_id=(\S+)`)
)

// faultLoggedTasks counts, per task id, the worker log lines that match
// pattern.
func faultLoggedTasks(e *env, pattern *regexp.Regexp) map[string]int {
	counts := map[string]int{}
	for _, w := range e.workers {
		for _, match := range pattern.FindAllStringSubmatch(w.Log(), -1) {
			counts[match[1]]++
		}
	}
	return counts
}

// faultRequireStartedOnce checks that each task of the batches was started
// by exactly one worker, exactly once, so that no assignment was handled
// twice.
func faultRequireStartedOnce(e *env, batches ...string) {
	e.t.Helper()
	started := faultLoggedTasks(e, faultStartedPattern)
	for _, batch := range batches {
		tasks, err := e.client.ListTasks(context.Background(), batch, "")
		require.NoError(e.t, err)
		for _, task := range tasks {
			assert.Equal(e.t, 1, started[task.ID], "starts of task %s (%s) on the workers", task.ID, task.Name)
		}
	}
}

// faultWaitOutboxesEmpty waits until no worker holds an outcome on disk,
// which shows that every outcome's acknowledgement reached its worker.
func faultWaitOutboxesEmpty(e *env) {
	e.t.Helper()
	err := cluster.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		for id := range e.workers {
			outcomes, _ := filepath.Glob(filepath.Join(e.dir, id, "outbox", "*.json"))
			if len(outcomes) > 0 {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(e.t, err, "outcomes stayed in a worker outbox without acknowledgement\n%s", e.logs())
}

// faultRequireCleanLogs stops every process, so that a panic on shutdown is
// seen too, and checks that no log reports a panic or a data race.
func faultRequireCleanLogs(e *env) {
	e.t.Helper()
	for id, w := range e.workers {
		assert.NoError(e.t, w.Stop(10*time.Second), "stop %s", id)
	}
	assert.NoError(e.t, e.coordinator.Stop(10*time.Second), "stop coordinator")

	logs := map[string]string{"coordinator": e.coordinator.Log()}
	for id, w := range e.workers {
		logs[id] = w.Log()
	}
	for name, log := range logs {
		for _, word := range []string{"panic", "DATA RACE"} {
			assert.NotContains(e.t, log, word, "%s log", name)
		}
	}
}

func faultCut(r *faultRun) {
	require.Positive(r.t, r.proxy.Cut(), "no connection to cut")
	r.submitSecond()
}

func faultReset(r *faultRun) {
	require.Positive(r.t, r.proxy.Reset(), "no connection to reset")
	r.submitSecond()
}

// faultBlackhole makes the proxy forward nothing and close no socket until
// both sides' heartbeat timeouts have fired and the first batch has
// finished. Then the proxy delivers the bytes it held.
func faultBlackhole(r *faultRun) {
	disconnects := map[string]int{}
	for id, w := range r.workers {
		disconnects[id] = strings.Count(w.Log(), "disconnected from coordinator")
	}
	r.proxy.Blackhole(true)
	r.submitSecond()

	// Both heartbeat timeouts are 2 s. The bound allows for a loaded
	// machine and the polling interval.
	const detectWithin = 10 * time.Second
	for _, id := range faultWorkers {
		r.waitDisconnectedWithin(id, detectWithin)
	}
	err := cluster.Poll(context.Background(), detectWithin, 50*time.Millisecond, func() (bool, error) {
		for id, w := range r.workers {
			if strings.Count(w.Log(), "disconnected from coordinator") <= disconnects[id] {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(r.t, err, "a worker did not notice the silent link\n%s", r.logs())

	r.hold(0)
	r.proxy.Blackhole(false)
}

// faultLatency adds 300 ms each way for at least four seconds, so a round
// trip takes longer than the 500 ms heartbeat interval.
func faultLatency(r *faultRun) {
	const delay = 300 * time.Millisecond
	r.proxy.Delay(delay)
	start := time.Now()
	r.submitSecond()

	// The coordinator's round-trip time for each worker shows that the
	// delay is in force. The smoothed value needs several heartbeats to
	// pass half of the 600 ms that the proxy adds to a round trip.
	err := cluster.Poll(context.Background(), 10*time.Second, 100*time.Millisecond, func() (bool, error) {
		workers, err := r.client.ListWorkers(context.Background())
		if err != nil || len(workers) < len(faultWorkers) {
			return false, nil
		}
		for _, w := range workers {
			if time.Duration(w.RTTMs*float64(time.Millisecond)) < delay {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(r.t, err, "round-trip times did not rise above %s\n%s", delay, r.logs())

	r.hold(4*time.Second - time.Since(start))
	r.proxy.Delay(0)
}

// faultThrottle limits each direction of each connection to 512 bytes a
// second for at least four seconds.
func faultThrottle(r *faultRun) {
	r.proxy.Throttle(512)
	r.submitSecond()
	r.hold(4 * time.Second)
	r.proxy.Throttle(0)
}

// faultCloseAfterUpgrade cuts the open connections and, for at least three
// seconds, closes every new one right after its WebSocket upgrade.
func faultCloseAfterUpgrade(r *faultRun) {
	r.proxy.CloseAfterUpgrade(true)
	require.Positive(r.t, r.proxy.Cut(), "no connection to cut")
	r.submitSecond()
	r.hold(3 * time.Second)
	r.proxy.CloseAfterUpgrade(false)
}

// faultFlapping cuts every connection every 200 ms for at least three
// seconds and until the first batch has finished, so that sessions keep
// opening and ending while tasks run and report.
func faultFlapping(r *faultRun) {
	const (
		interval = 200 * time.Millisecond
		minFlaps = 15
		maxFlaps = 50
	)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for i := range maxFlaps {
		if i >= minFlaps && r.firstFinished() {
			return
		}
		r.proxy.Cut()
		if i == minFlaps/2 {
			r.submitSecond()
		}
		select {
		case <-ticker.C:
		case <-r.t.Context().Done():
			r.t.Fatal("test ended while the link was flapping")
		}
	}
	r.t.Fatalf("the first batch did not finish within %d flaps of the link\n%s", maxFlaps, r.logs())
}

// faultGracefulRestart stops the coordinator with SIGTERM and starts it on
// the same data. The second batch is submitted as soon as the new
// coordinator serves its API, while the workers are still reconnecting.
func faultGracefulRestart(r *faultRun) {
	require.NoError(r.t, r.coordinator.Stop(10*time.Second), "coordinator did not stop cleanly after SIGTERM")
	r.startCoordinator()
	r.submitSecond()
}
