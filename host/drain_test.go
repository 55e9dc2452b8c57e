package host

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// awaitRun waits for Run to return and returns its error.
func awaitRun(t *testing.T, hs *harness) error {
	t.Helper()
	select {
	case err := <-hs.done:
		hs.done <- err // let Cleanup read it too
		return err
	case <-time.After(waitFor):
		t.Fatal("host did not stop")
		return nil
	}
}

func TestDrainLetsRunningTaskFinish(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.DrainTimeout = time.Minute
	exec := &testExecutor{name: "r", types: []string{"gate"}, gate: make(chan struct{})}
	hs, c := startRunner(t, cfg, exec)
	c.frame(t, assignFrame("t1", 1, "gate"))
	expectFrame(t, c, "task_progress")

	before := time.Now()
	hs.host.Drain("test drain")
	draining := expectFrame(t, c, "draining").GetDraining()
	assert.Equal(t, "test drain", draining.GetReason())
	assert.WithinDuration(t, before.Add(time.Minute), time.UnixMilli(draining.GetDeadlineUnixMs()), 5*time.Second)

	// A task assigned during the drain is released without running.
	c.frame(t, assignFrame("t2", 1, "gate"))
	rejected := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t2", rejected.GetRef().GetTaskId())
	assert.True(t, rejected.GetReleased())
	assert.True(t, rejected.GetRetryable())

	close(exec.gate)
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t1", outcome.GetRef().GetTaskId())
	assert.Equal(t, wirepb.Status_STATUS_SUCCEEDED, outcome.GetStatus())
	assert.False(t, outcome.GetReleased())

	// The drain waits for the acknowledgements before Run returns.
	assert.Never(t, func() bool { return len(hs.done) > 0 }, 100*time.Millisecond, 10*time.Millisecond,
		"Run returned before the outcomes were acknowledged")
	c.frame(t, ackFrame("t1", 1))
	c.frame(t, ackFrame("t2", 1))
	require.NoError(t, awaitRun(t, hs))
	assert.Empty(t, outboxFiles(t, cfg))
	assert.True(t, hs.plugins.allKilled())
	<-c.stopped
}

func TestDrainReleasesTaskAfterTimeout(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.DrainTimeout = 200 * time.Millisecond
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"block"}})
	c.frame(t, assignFrame("t1", 4, "block"))
	expectFrame(t, c, "task_progress")

	hs.host.Drain("test drain")
	expectFrame(t, c, "draining")
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.EqualValues(t, 4, outcome.GetRef().GetAttempt())
	assert.True(t, outcome.GetReleased())
	assert.True(t, outcome.GetRetryable())
	assert.Equal(t, wirepb.Status_STATUS_FAILED, outcome.GetStatus())
	assert.Contains(t, outcome.GetMessage(), "drain_timeout of 200ms passed")

	c.frame(t, ackFrame("t1", 4))
	require.NoError(t, awaitRun(t, hs))
}

func TestDrainReleasesWaitingTask(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.Slots = 1
	cfg.DrainTimeout = time.Minute
	exec := &testExecutor{name: "r", types: []string{"gate"}, gate: make(chan struct{})}
	hs, c := startRunner(t, cfg, exec)
	c.frame(t, assignFrame("t1", 1, "gate"))
	expectFrame(t, c, "task_progress")
	c.frame(t, assignFrame("t2", 1, "gate"))
	require.Eventually(t, func() bool { return hs.host.runningCount() == 2 }, waitFor, 10*time.Millisecond)

	// t2 waits for the only slot, so the drain gives it back at once.
	hs.host.Drain("test drain")
	released := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t2", released.GetRef().GetTaskId())
	assert.True(t, released.GetReleased())

	close(exec.gate)
	finished := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t1", finished.GetRef().GetTaskId())
	assert.Equal(t, wirepb.Status_STATUS_SUCCEEDED, finished.GetStatus())
	c.frame(t, ackFrame("t1", 1))
	c.frame(t, ackFrame("t2", 1))
	require.NoError(t, awaitRun(t, hs))
}

func TestDrainEndedEarlyReleasesTasks(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.DrainTimeout = time.Hour
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"block"}})
	c.frame(t, assignFrame("t1", 1, "block"))
	expectFrame(t, c, "task_progress")

	hs.host.Drain("test drain")
	expectFrame(t, c, "draining")
	hs.cancel()
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.True(t, outcome.GetReleased())
	assert.Contains(t, outcome.GetMessage(), "drain was ended early")
	require.NoError(t, awaitRun(t, hs))
	assert.Equal(t, []string{"t1-1.json"}, outboxFiles(t, cfg),
		"an unacknowledged outcome stays in the outbox for the next start")
}

func TestDrainWaitsForAcksBounded(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.ShutdownTimeout = 300 * time.Millisecond
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"echo"}})
	c.frame(t, assignFrame("t1", 1, "echo"))
	expectFrame(t, c, "task_outcome")

	start := time.Now()
	hs.host.Drain("test drain")
	require.NoError(t, awaitRun(t, hs))
	assert.GreaterOrEqual(t, time.Since(start), cfg.ShutdownTimeout,
		"the drain waits for the acknowledgement up to shutdown_timeout")
	assert.Contains(t, hs.logs.String(), "drain finished with outcomes the coordinator has not acknowledged")
}

func TestDrainingFrameSentAgainInNewSession(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.DrainTimeout = time.Minute
	exec := &testExecutor{name: "r", types: []string{"gate"}, gate: make(chan struct{})}
	hs, c := startRunner(t, cfg, exec)
	c.frame(t, assignFrame("t1", 1, "gate"))
	expectFrame(t, c, "task_progress")
	hs.host.Drain("test drain")
	first := expectFrame(t, c, "draining").GetDraining()

	// A new session, after a reconnect that could not resume, learns of
	// the drain again after the state sync.
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	again := expectFrame(t, c, "draining").GetDraining()
	assert.Equal(t, first.GetDeadlineUnixMs(), again.GetDeadlineUnixMs())

	close(exec.gate)
	c.frame(t, syncResultFrame())
	expectFrame(t, c, "task_outcome")
	c.frame(t, ackFrame("t1", 1))
	require.NoError(t, awaitRun(t, hs))
}

// An assignment that the coordinator sent before it read the Draining
// frame may arrive when nothing runs and every outcome is acknowledged.
// The drain must not end before that assignment's released outcome is
// acknowledged, or the coordinator counts the attempt as lost.
func TestDrainWaitsForLateAssignment(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.DrainTimeout = time.Minute
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"block"}})

	hs.host.Drain("test drain")
	expectFrame(t, c, "draining")
	c.frame(t, assignFrame("late", 1, "block"))
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "late", outcome.GetRef().GetTaskId())
	assert.True(t, outcome.GetReleased())

	assert.Never(t, func() bool { return len(hs.done) > 0 }, 100*time.Millisecond, 10*time.Millisecond,
		"Run returned before the late assignment's outcome was acknowledged")
	c.frame(t, ackFrame("late", 1))
	require.NoError(t, awaitRun(t, hs))
	assert.Empty(t, outboxFiles(t, cfg))
}

// A stop request may come while the released outcome of a late assignment
// is still being written to the outbox. The session must stay open until
// the connector has that outcome, or the coordinator counts the attempt as
// lost and runs the task again only after its grace period.
func TestStopDuringDrainHandsOverLateRelease(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.DrainTimeout = time.Minute
	hs, c := startRunner(t, cfg, &testExecutor{name: "r", types: []string{"block"}})

	hs.host.Drain("test drain")
	expectFrame(t, c, "draining")
	// Taking every outbox write slot holds the released outcome before
	// its outbox write.
	for range cap(hs.host.outboxWrites) {
		hs.host.outboxWrites <- struct{}{}
	}
	c.frame(t, assignFrame("late", 1, "block"))
	require.Eventually(t, func() bool {
		return strings.Contains(hs.logs.String(), "releasing task: the worker is stopping")
	}, waitFor, 5*time.Millisecond)
	hs.cancel()
	require.Eventually(t, func() bool {
		logs := hs.logs.String()
		return strings.Contains(logs, "drain ended early") || strings.Contains(logs, "drain finished")
	}, waitFor, 5*time.Millisecond)
	for range cap(hs.host.outboxWrites) {
		<-hs.host.outboxWrites
	}

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "late", outcome.GetRef().GetTaskId())
	assert.True(t, outcome.GetReleased())
	require.NoError(t, awaitRun(t, hs))
}
