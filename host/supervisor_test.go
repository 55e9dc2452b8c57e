package host

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/host/config"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// fastRestart makes a crashed plugin restart within milliseconds.
func fastRestart(cfg *config.Config) {
	cfg.RestartBackoffBase = 10 * time.Millisecond
	cfg.RestartBackoffCap = 20 * time.Millisecond
}

// startRunner starts a host with one executor plugin "runner" that serves
// echo, block and gate tasks, and completes the first state sync.
func startRunner(t *testing.T, cfg *config.Config, exec *testExecutor) (*harness, *fakeConnector) {
	t.Helper()
	hs := startHost(t, cfg, map[string]sdk.Executor{"runner": exec})
	c := nextConnector(t, hs)
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())
	return hs, c
}

func TestExecutorCrashFailsTaskRetryable(t *testing.T) {
	cfg := testConfig(t, "runner")
	fastRestart(cfg)
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"block", "echo"}})

	c.frame(t, assignFrame("t1", 1, "block"))
	expectFrame(t, c, "task_progress")
	first := hs.plugins.processes("runner")
	require.Len(t, first, 1)
	first[0].Kill()

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t1", outcome.GetRef().GetTaskId())
	assert.Equal(t, wirepb.Status_STATUS_FAILED, outcome.GetStatus())
	assert.True(t, outcome.GetRetryable(), "a crash of the executor is not the task's fault")
	assert.False(t, outcome.GetReleased())
	assert.Contains(t, outcome.GetMessage(), "executor plugin runner crashed")
	assert.Contains(t, outcome.GetMessage(), "signal: killed")

	// The supervisor launches a new process, and the next task runs on it.
	require.Eventually(t, func() bool {
		return len(hs.plugins.processes("runner")) == 2 && hs.host.executors[0].downMessage() == ""
	}, waitFor, 10*time.Millisecond)
	c.frame(t, assignFrame("t2", 1, "echo"))
	second := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t2", second.GetRef().GetTaskId())
	assert.Equal(t, wirepb.Status_STATUS_SUCCEEDED, second.GetStatus())
	assert.Contains(t, hs.logs.String(), "executor plugin restarted")
}

// An attempt assigned while its executor plugin restarts waits for the
// restart and runs on the same attempt, so one crash does not use up two
// attempts.
func TestExecutorDownTaskWaitsForRestart(t *testing.T) {
	cfg := testConfig(t, "runner")
	fastRestart(cfg)
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"echo"}})

	hs.plugins.failExecutors.Store(true)
	hs.plugins.processes("runner")[0].Kill()
	require.Eventually(t, func() bool { return hs.host.executors[0].downMessage() != "" },
		waitFor, 10*time.Millisecond)

	c.frame(t, assignFrame("t1", 1, "echo"))
	require.Eventually(t, func() bool {
		return strings.Count(hs.logs.String(), "executor plugin restart failed") >= 2
	}, waitFor, 10*time.Millisecond, "the supervisor keeps trying")
	require.Eventually(t, func() bool {
		return strings.Contains(hs.logs.String(), "task waits for its executor plugin to restart")
	}, waitFor, 10*time.Millisecond)

	hs.plugins.failExecutors.Store(false)
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t1", outcome.GetRef().GetTaskId())
	assert.EqualValues(t, 1, outcome.GetRef().GetAttempt())
	assert.Equal(t, wirepb.Status_STATUS_SUCCEEDED, outcome.GetStatus())
}

// An executor plugin that stays down longer than the wait fails the
// waiting attempt as retryable. The failure counts as an attempt, so a
// broken executor cannot hold a task forever.
func TestExecutorDownTooLongFailsTask(t *testing.T) {
	cfg := testConfig(t, "runner")
	fastRestart(cfg)
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"echo"}})
	hs.host.executorUpWait = 100 * time.Millisecond

	hs.plugins.failExecutors.Store(true)
	hs.plugins.processes("runner")[0].Kill()
	require.Eventually(t, func() bool { return hs.host.executors[0].downMessage() != "" },
		waitFor, 10*time.Millisecond)

	c.frame(t, assignFrame("t1", 1, "echo"))
	rejected := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_FAILED, rejected.GetStatus())
	assert.True(t, rejected.GetRetryable())
	assert.False(t, rejected.GetReleased())
	assert.Contains(t, rejected.GetMessage(), "executor plugin runner is restarting")
	assert.Contains(t, rejected.GetMessage(), "signal: killed")
}

func TestConnectorCrashResendsHeldOutcome(t *testing.T) {
	cfg := testConfig(t, "runner")
	fastRestart(cfg)
	hs, first := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"echo"}})

	first.frame(t, assignFrame("t1", 1, "echo"))
	expectFrame(t, first, "task_outcome")
	// The first connector accepted the outcome but crashed before the
	// coordinator acknowledged it.
	close(first.crash)

	second := nextConnector(t, hs)
	second.state("connected", "")
	sync := expectFrame(t, second, "state_sync").GetStateSync()
	require.Len(t, sync.GetHeldOutcomes(), 1)
	assert.Equal(t, "t1", sync.GetHeldOutcomes()[0].GetTaskId())
	second.frame(t, syncResultFrame())
	outcome := expectFrame(t, second, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t1", outcome.GetRef().GetTaskId())
	second.frame(t, ackFrame("t1", 1))
	require.Eventually(t, func() bool { return len(outboxFiles(t, cfg)) == 0 }, waitFor, 10*time.Millisecond)
	assert.Contains(t, hs.logs.String(), "connector plugin stopped, restarting it")
}

func TestRestartBackoffDelays(t *testing.T) {
	b := newRestartBackoff(100*time.Millisecond, time.Second)
	now := time.Now()
	limits := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, time.Second, time.Second}
	for i, limit := range limits {
		delay, _, _ := b.crashed(now, 0)
		assert.Positive(t, delay, "crash %d", i+1)
		assert.LessOrEqual(t, delay, limit, "crash %d", i+1)
	}

	// A plugin that ran long enough counts as healthy again.
	delay, _, _ := b.crashed(now, restartHealthyAfter)
	assert.LessOrEqual(t, delay, 100*time.Millisecond)
}

func TestRestartBackoffWarnsOncePerLoop(t *testing.T) {
	b := newRestartBackoff(10*time.Millisecond, 20*time.Millisecond)
	start := time.Now()
	var flagged []int
	for i := range 2 * restartWarnCount {
		_, recent, looping := b.crashed(start.Add(time.Duration(i)*time.Second), 0)
		if looping {
			flagged = append(flagged, recent)
		}
	}
	assert.Equal(t, []int{restartWarnCount}, flagged, "a crash loop is reported once")

	// After a quiet window, a new loop is reported again.
	later := start.Add(restartWarnWindow + time.Hour)
	flagged = nil
	for i := range restartWarnCount {
		_, _, looping := b.crashed(later.Add(time.Duration(i)*time.Second), 0)
		if looping {
			flagged = append(flagged, i)
		}
	}
	assert.Equal(t, []int{restartWarnCount - 1}, flagged)
}
