package coordinator

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/protocol/pb"
)

// logBuffer keeps the coordinator's log for assertions and passes it on to
// the test log.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	next io.Writer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	b.mu.Unlock()
	return b.next.Write(p)
}

// line returns the first log line that contains every one of parts, or "".
func (b *logBuffer) line(parts ...string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, line := range strings.Split(b.buf.String(), "\n") {
		found := true
		for _, p := range parts {
			found = found && strings.Contains(line, p)
		}
		if found {
			return line
		}
	}
	return ""
}

func TestStaleOutcomeLoggedAndCounted(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 200 * time.Millisecond
	logs := &logBuffer{next: testLogWriter{t}}
	ts := startServerLogging(t, cfg, logs)

	w1, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	stale := w1.expect("assign").GetAssign().GetRef()
	w1.close()
	w2, _ := connectSynced(t, ts, "w2", []string{"command"})
	current := w2.expect("assign").GetAssign().GetRef()
	require.Equal(t, uint32(2), current.GetAttempt())
	assert.Equal(t, uint64(1), ts.Stats().LostWorkers, "w1 did not return within reassign_after")

	w1b, _ := connectSynced(t, ts, "w1", []string{"command"}, stale)
	w1b.send(outcomeFrame(stale, pb.Status_STATUS_SUCCEEDED))
	ack := w1b.expect("outcome_ack").GetOutcomeAck()
	assert.False(t, ack.GetApplied())
	assert.Equal(t, "stale attempt 1, current attempt is 2", ack.GetReason())
	assert.Equal(t, uint64(1), ts.Stats().StaleOutcomes)
	assert.Zero(t, ts.Stats().DuplicateOutcomes)

	line := logs.line("outcome rejected", "task_id="+task.ID)
	require.NotEmpty(t, line, "the rejection is logged")
	assert.Contains(t, line, "worker_id=w1")
	assert.Contains(t, line, "attempt=1")
	assert.Contains(t, line, "current_attempt=2")

	// The current attempt's outcome applies once; its replay is a
	// duplicate, counted apart from stale outcomes.
	w2.send(outcomeFrame(current, pb.Status_STATUS_SUCCEEDED))
	assert.True(t, w2.expect("outcome_ack").GetOutcomeAck().GetApplied())
	w2.send(outcomeFrame(current, pb.Status_STATUS_SUCCEEDED))
	dup := w2.expect("outcome_ack").GetOutcomeAck()
	assert.False(t, dup.GetApplied())
	assert.Equal(t, uint64(1), ts.Stats().DuplicateOutcomes)
	assert.Equal(t, uint64(1), ts.Stats().StaleOutcomes)
}

func TestTimeoutEndsHungAttempt(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.TaskTimeoutGrace = 100 * time.Millisecond
	ts := startServer(t, cfg)
	w, _ := connectSynced(t, ts, "w1", []string{"command"})

	spec := commandSpec()
	spec.Timeout = "200ms"
	spec.MaxAttempts = 2
	task := submit(t, ts, spec).Tasks[0]

	// The worker never reports, as when its host hangs. Each attempt is
	// cancelled by the coordinator once timeout and grace have passed.
	first := w.expect("assign").GetAssign().GetRef()
	cancel := w.expect("cancel_task").GetCancelTask()
	assert.Equal(t, first.GetAttempt(), cancel.GetRef().GetAttempt())
	assert.Contains(t, cancel.GetReason(), "timeout 200ms plus task_timeout_grace 100ms")

	second := w.expect("assign").GetAssign().GetRef()
	assert.Equal(t, uint32(2), second.GetAttempt(), "a timed out attempt is retried while attempts remain")
	cancel = w.expect("cancel_task").GetCancelTask()
	assert.Equal(t, uint32(2), cancel.GetRef().GetAttempt())

	require.Eventually(t, func() bool {
		return getTask(t, ts, task.ID).State == api.StateTimedOut
	}, waitFor, 20*time.Millisecond, "the last timed out attempt ends the task")
	final := getTask(t, ts, task.ID)
	require.Len(t, final.Attempts, 2)
	for _, a := range final.Attempts {
		assert.Equal(t, "timed_out", a.State)
	}
	assert.Contains(t, final.Attempts[1].Reason, "task timed_out after 2 of 2 attempts")

	// The worker's own late report of the first attempt is stale.
	w.send(outcomeFrame(first, pb.Status_STATUS_TIMED_OUT))
	assert.False(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())
}

func TestRetryableOutcomeWaitsForBackoff(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.RetryBackoffBase = 1500 * time.Millisecond
	cfg.RetryBackoffMax = 1500 * time.Millisecond
	ts := startServer(t, cfg)
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	spec := commandSpec()
	spec.MaxAttempts = 2
	task := submit(t, ts, spec).Tasks[0]

	first := w.expect("assign").GetAssign().GetRef()
	crashed := outcomeFrame(first, pb.Status_STATUS_FAILED)
	crashed.GetTaskOutcome().Retryable = true
	crashed.GetTaskOutcome().Message = "executor plugin crashed"
	sent := time.Now()
	w.send(crashed)
	ack := w.expect("outcome_ack").GetOutcomeAck()
	assert.True(t, ack.GetApplied())

	queued := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateQueued, queued.State)
	require.False(t, queued.NotBefore.IsZero(), "a retried task has a not-before time")
	assert.GreaterOrEqual(t, queued.NotBefore.Sub(sent), 700*time.Millisecond,
		"the delay is at least half of retry_backoff_base")
	assert.True(t, strings.HasPrefix(queued.QueuedReason, "retry backoff until "), queued.QueuedReason)
	require.Len(t, queued.Attempts, 1)
	assert.Equal(t, "failed", queued.Attempts[0].State)
	assert.Equal(t, "retryable failure: executor plugin crashed", queued.Attempts[0].Reason)

	// The worker has a free slot all along, yet the task comes back only
	// after its not-before time.
	second := w.expect("assign").GetAssign().GetRef()
	assert.False(t, time.Now().Before(queued.NotBefore), "assigned before the backoff ended")
	assert.Equal(t, uint32(2), second.GetAttempt())

	// A retryable failure of the last attempt ends the task with it.
	last := outcomeFrame(second, pb.Status_STATUS_FAILED)
	last.GetTaskOutcome().Retryable = true
	w.send(last)
	assert.True(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())
	final := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateFailed, final.State)
	require.NotNil(t, final.Outcome)
	assert.Equal(t, 2, final.Outcome.Attempt)

	// The first attempt's outcome again, as after a replay, is a
	// duplicate and not a stale outcome.
	w.send(crashed)
	dup := w.expect("outcome_ack").GetOutcomeAck()
	assert.False(t, dup.GetApplied())
	assert.Contains(t, dup.GetReason(), "duplicate")
	assert.Zero(t, ts.Stats().StaleOutcomes)
}

func TestRetryBackoffGrowsWithinBounds(t *testing.T) {
	cfg := config.Default("127.0.0.1:0", t.TempDir())
	cfg.RetryBackoffBase = time.Second
	cfg.RetryBackoffMax = 10 * time.Second
	s := &Server{cfg: cfg}
	cases := []struct {
		failures int
		ceiling  time.Duration
	}{
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{4, 8 * time.Second},
		{5, 10 * time.Second},
		{100, 10 * time.Second},
	}
	for _, tc := range cases {
		for range 50 {
			d := s.retryBackoff(tc.failures)
			require.GreaterOrEqual(t, d, tc.ceiling/2, "failures %d", tc.failures)
			require.LessOrEqual(t, d, tc.ceiling, "failures %d", tc.failures)
		}
	}
	assert.Zero(t, s.retryBackoff(0))
	cfg.RetryBackoffBase = 0
	assert.Zero(t, s.retryBackoff(3), "a base of 0 retries at once")
}

func TestDrainingWorkerGetsNoTasks(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 200 * time.Millisecond
	ts := startServer(t, cfg)
	w1, _ := connectSynced(t, ts, "w1", []string{"command"})
	running := submit(t, ts, commandSpec()).Tasks[0]
	runningRef := w1.expect("assign").GetAssign().GetRef()

	w1.send(&pb.Frame{Body: &pb.Frame_Draining{Draining: &pb.Draining{
		DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli(), Reason: "SIGTERM"}}})
	require.Eventually(t, func() bool {
		return workerViewState(t, ts, "w1") == api.WorkerDraining
	}, waitFor, 10*time.Millisecond, "the worker view shows draining")

	// w1 has a free slot but is draining, so the task waits for w2, which
	// the scheduler would otherwise offer it only after w1.
	task := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, "every connected worker that can run it is draining, such as w1",
		getTask(t, ts, task.ID).QueuedReason)
	w2, _ := connectSynced(t, ts, "w2", []string{"command"})
	assert.Equal(t, task.ID, w2.expect("assign").GetAssign().GetRef().GetTaskId())
	assert.Empty(t, w1.frames, "the draining worker got no assignment")

	// w1 leaves with its attempt still running: the attempt gets the grace
	// period, but the worker is not counted as lost.
	w1.close()
	// The requeued task goes on to w2, so the test watches the attempt.
	reassigned := w2.expect("assign").GetAssign().GetRef()
	assert.Equal(t, running.ID, reassigned.GetTaskId(), "the attempt left behind is requeued after reassign_after")
	assert.Equal(t, runningRef.GetAttempt()+1, reassigned.GetAttempt())
	requeued := getTask(t, ts, running.ID)
	require.NotEmpty(t, requeued.Attempts)
	assert.Equal(t, "lost", requeued.Attempts[0].State)
	assert.Contains(t, requeued.Attempts[0].Reason, "left after draining")
	assert.Equal(t, api.WorkerDrained, workerViewState(t, ts, "w1"))
	assert.Equal(t, uint64(1), ts.Stats().DrainedWorkers)
	assert.Zero(t, ts.Stats().LostWorkers)
}

func TestReleasedAttemptDoesNotCount(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w1, _ := connectSynced(t, ts, "w1", []string{"command"})
	spec := commandSpec()
	spec.MaxAttempts = 1
	task := submit(t, ts, spec).Tasks[0]
	ref := w1.expect("assign").GetAssign().GetRef()

	w1.send(&pb.Frame{Body: &pb.Frame_Draining{Draining: &pb.Draining{Reason: "SIGTERM"}}})
	released := outcomeFrame(ref, pb.Status_STATUS_CANCELLED)
	released.GetTaskOutcome().Released = true
	released.GetTaskOutcome().Message = "drain deadline passed"
	w1.send(released)
	assert.True(t, w1.expect("outcome_ack").GetOutcomeAck().GetApplied())

	queued := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateQueued, queued.State, "a released attempt requeues even the last attempt")
	assert.Equal(t, 1, queued.Released)
	assert.True(t, queued.NotBefore.IsZero(), "a released task needs no backoff")
	require.Len(t, queued.Attempts, 1)
	assert.Equal(t, "released", queued.Attempts[0].State)

	w2, _ := connectSynced(t, ts, "w2", []string{"command"})
	second := w2.expect("assign").GetAssign().GetRef()
	assert.Equal(t, uint32(2), second.GetAttempt())
	w2.send(outcomeFrame(second, pb.Status_STATUS_SUCCEEDED))
	assert.True(t, w2.expect("outcome_ack").GetOutcomeAck().GetApplied())
	assert.Equal(t, api.StateSucceeded, getTask(t, ts, task.ID).State)
}

// workerViewState returns the state of a worker in GET /v1/workers.
func workerViewState(t *testing.T, ts *testServer, id string) string {
	t.Helper()
	var resp struct{ Workers []api.Worker }
	require.Equal(t, 200, doJSON(t, "GET", ts.url+"/v1/workers", nil, &resp))
	for _, w := range resp.Workers {
		if w.ID == id {
			return w.State
		}
	}
	return ""
}

func TestDrainingSurvivesGracefulRestart(t *testing.T) {
	dataDir := t.TempDir()
	ts := startServer(t, testConfig(t, dataDir))
	w := newSeqWorker(t, ts, "w1")
	w.connect()
	w.sync()
	w.send(&pb.Frame{Body: &pb.Frame_Draining{Draining: &pb.Draining{Reason: "SIGTERM"}}})
	require.Eventually(t, func() bool {
		return workerViewState(t, ts, "w1") == api.WorkerDraining
	}, waitFor, 10*time.Millisecond)

	ts.stop()
	assert.Equal(t, pb.Reject_CODE_SHUTTING_DOWN, w.expect("reject").GetReject().GetCode())
	w.cut()
	w.ts = startServer(t, testConfig(t, dataDir))
	require.True(t, w.connect().GetWelcome().GetResumed())

	// The resumed session is still draining, so a new task waits.
	task := submit(t, w.ts, commandSpec()).Tasks[0]
	assert.Equal(t, api.WorkerDraining, workerViewState(t, w.ts, "w1"))
	assert.Equal(t, "every connected worker that can run it is draining, such as w1",
		getTask(t, w.ts, task.ID).QueuedReason)
}
