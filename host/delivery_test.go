package host

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// startSynced starts a host with an echo executor and the given options,
// and completes the state sync of a first session.
func startSynced(t *testing.T, options ...func(*Host)) (*harness, *fakeConnector) {
	t.Helper()
	cfg := testConfig(t, "echo-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{
		"echo-runner": &testExecutor{name: "e", types: []string{"echo"}},
	}, options...)
	c := nextConnector(t, hs)
	connectedState(c, false)
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())
	return hs, c
}

// slowResend makes the resender's first retry wait a minute, so the only
// retries within a test are those that a connect or a state sync result
// starts.
func slowResend(h *Host) {
	h.resendBase = time.Minute
	h.resendCap = time.Minute
}

// fastResend makes the resender retry within a few milliseconds.
func fastResend(h *Host) {
	h.resendBase = 10 * time.Millisecond
	h.resendCap = 50 * time.Millisecond
}

// nextOutcomes returns the task ids of the next n outcome frames the host
// sends. It fails on a state sync, because none of its callers expects one.
func nextOutcomes(t *testing.T, c *fakeConnector, n int) []string {
	t.Helper()
	var ids []string
	deadline := time.After(waitFor)
	for len(ids) < n {
		select {
		case frame := <-c.sent:
			typ := protocol.TypeOf(frame)
			require.NotEqual(t, "state_sync", typ, "unexpected state sync after outcomes %v", ids)
			if typ == "task_outcome" {
				ids = append(ids, frame.GetTaskOutcome().GetRef().GetTaskId())
			}
		case <-deadline:
			t.Fatalf("host sent %d of %d outcomes: %v", len(ids), n, ids)
		}
	}
	return ids
}

// failOneOutcome assigns taskID while the connector fails every Send the
// way fail sets up, and waits until the outcome's Send has failed.
func failOneOutcome(t *testing.T, hs *harness, c *fakeConnector, taskID string, fail func(bool)) {
	t.Helper()
	fail(true)
	before := c.failedSends.Load()
	c.frame(t, assignFrame(taskID, 1, "echo"))
	require.Eventually(t, func() bool {
		hs.host.mu.Lock()
		defer hs.host.mu.Unlock()
		return hs.host.held[taskRef{taskID, 1}] != nil && c.failedSends.Load() > before
	}, waitFor, 5*time.Millisecond, "the outcome of %s was not held and refused", taskID)
	fail(false)
}

func TestResendAfterFailedSend(t *testing.T) {
	cases := []struct {
		name string
		// options set the host's timeouts and backoff, fail makes the
		// fake connector fail Sends, and heal is what makes the host send
		// the outcome again.
		options []func(*Host)
		fail    func(c *fakeConnector) func(bool)
		heal    func(c *fakeConnector)
	}{
		{
			name:    "full queue, resumed session",
			options: []func(*Host){slowResend},
			fail:    func(c *fakeConnector) func(bool) { return c.exhausted.Store },
			heal:    func(c *fakeConnector) { connectedState(c, true) },
		},
		{
			name:    "full queue, backoff timer",
			options: []func(*Host){fastResend},
			fail:    func(c *fakeConnector) func(bool) { return c.exhausted.Store },
			heal:    func(*fakeConnector) {},
		},
		{
			name: "send timed out, backoff timer",
			options: []func(*Host){fastResend, func(h *Host) {
				h.sendTimeout = 50 * time.Millisecond
			}},
			fail: func(c *fakeConnector) func(bool) { return c.stall.Store },
			heal: func(*fakeConnector) {},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hs, c := startSynced(t, tc.options...)

			failOneOutcome(t, hs, c, "t1", tc.fail(c))
			tc.heal(c)
			assert.Equal(t, []string{"t1"}, nextOutcomes(t, c, 1))

			// The outcome is resent once: the next outcome is the next task's.
			c.frame(t, assignFrame("t2", 1, "echo"))
			assert.Equal(t, []string{"t2"}, nextOutcomes(t, c, 1))
		})
	}
}

func TestResendEveryUnsentOutcome(t *testing.T) {
	hs, c := startSynced(t, slowResend)

	c.exhausted.Store(true)
	c.frame(t, assignFrame("t1", 1, "echo"))
	c.frame(t, assignFrame("t2", 1, "echo"))
	require.Eventually(t, func() bool {
		hs.host.mu.Lock()
		defer hs.host.mu.Unlock()
		return len(hs.host.held) == 2 && len(hs.host.unsent) == 2
	}, waitFor, 5*time.Millisecond)
	c.exhausted.Store(false)

	connectedState(c, true)
	assert.ElementsMatch(t, []string{"t1", "t2"}, nextOutcomes(t, c, 2))
	c.frame(t, assignFrame("t3", 1, "echo"))
	assert.Equal(t, []string{"t3"}, nextOutcomes(t, c, 1))
}

func TestResendSkipsAcceptedOutcomes(t *testing.T) {
	_, c := startSynced(t, fastResend)

	c.frame(t, assignFrame("t1", 1, "echo"))
	c.frame(t, assignFrame("t2", 1, "echo"))
	assert.ElementsMatch(t, []string{"t1", "t2"}, nextOutcomes(t, c, 2))

	// A resumed session keeps what the connector accepted: the next outcome
	// the host sends is t3's.
	connectedState(c, true)
	c.frame(t, assignFrame("t3", 1, "echo"))
	assert.Equal(t, []string{"t3"}, nextOutcomes(t, c, 1))
	for _, id := range []string{"t1", "t2", "t3"} {
		c.frame(t, ackFrame(id, 1))
	}

	// In a new session, an outcome finished after the state sync is sent
	// once, and the state sync result does not send it again.
	connectedState(c, false)
	expectFrame(t, c, "state_sync")
	c.frame(t, assignFrame("t4", 1, "echo"))
	assert.Equal(t, []string{"t4"}, nextOutcomes(t, c, 1))
	c.frame(t, syncResultFrame())
	c.frame(t, assignFrame("t5", 1, "echo"))
	assert.Equal(t, []string{"t5"}, nextOutcomes(t, c, 1))
}

func TestStateSyncRetriedAfterResume(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{
		"echo-runner": &testExecutor{name: "e", types: []string{"echo"}},
	}, slowResend)
	c := nextConnector(t, hs)

	c.exhausted.Store(true)
	connectedState(c, false)
	require.Eventually(t, func() bool { return c.failedSends.Load() > 0 }, waitFor, 5*time.Millisecond)
	c.exhausted.Store(false)

	// The coordinator kept the session and still waits for its state sync.
	connectedState(c, true)
	expectFrame(t, c, "state_sync")
}

func TestResendDropsCorruptOutcome(t *testing.T) {
	hs, c := startSynced(t, slowResend)
	failOneOutcome(t, hs, c, "t1", c.exhausted.Store)

	path := filepath.Join(hs.host.outbox.Dir(), "t1-1.json")
	require.NoError(t, os.WriteFile(path, []byte("{not json"), 0o600))
	connectedState(c, true)
	c.frame(t, assignFrame("t2", 1, "echo"))
	assert.Equal(t, []string{"t2"}, nextOutcomes(t, c, 1), "the corrupt outcome is not sent")

	assert.False(t, hs.host.isHeld(taskRef{"t1", 1}))
	assert.FileExists(t, path+corruptSuffix)
	assert.Contains(t, hs.logs.String(), "[ERROR] host: held outcome lost")

	// The next state sync lists only the outcome still held.
	connectedState(c, false)
	sync := expectFrame(t, c, "state_sync").GetStateSync()
	require.Len(t, sync.GetHeldOutcomes(), 1)
	assert.Equal(t, "t2", sync.GetHeldOutcomes()[0].GetTaskId())
}

func TestOutboxWriteFailureKeepsOutcome(t *testing.T) {
	hs, c := startSynced(t)

	// A file in place of the outbox folder makes every write fail.
	dir := hs.host.outbox.Dir()
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.WriteFile(dir, nil, 0o600))

	c.frame(t, assignFrame("t1", 1, "echo"))
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t1", outcome.GetRef().GetTaskId())
	assert.JSONEq(t, `{"n":1}`, string(outcome.GetOutput()))

	logs := hs.logs.String()
	assert.Equal(t, outboxWriteAttempts-1, strings.Count(logs, "outbox write failed, retrying"))
	assert.Contains(t, logs, "[ERROR] host: outcome not written to outbox")
	assert.Contains(t, logs, "dir="+dir)

	hs.host.mu.Lock()
	entry := hs.host.held[taskRef{"t1", 1}]
	hs.host.mu.Unlock()
	require.NotNil(t, entry, "the outcome stays held until acknowledged")
	assert.NotNil(t, entry.memory, "the outcome is kept in memory")

	c.frame(t, ackFrame("t1", 1))
	require.Eventually(t, func() bool { return !hs.host.isHeld(taskRef{"t1", 1}) }, waitFor, 5*time.Millisecond)
}

func TestHeldOutcomeBodyStaysOnDisk(t *testing.T) {
	hs, c := startSynced(t)
	c.frame(t, assignFrame("t1", 1, "echo"))
	expectFrame(t, c, "task_outcome")

	hs.host.mu.Lock()
	entry := hs.host.held[taskRef{"t1", 1}]
	hs.host.mu.Unlock()
	require.NotNil(t, entry)
	assert.Nil(t, entry.memory, "a held outcome written to the outbox is read from disk when sent")
	_, err := os.Stat(filepath.Join(hs.host.outbox.Dir(), "t1-1.json"))
	assert.NoError(t, err)
}

func TestHandleStateLogs(t *testing.T) {
	cases := []struct {
		state string
		want  string
	}{
		{"connecting", "[DEBUG] host: connecting to coordinator"},
		{"resuming", "[DEBUG] host: resuming session with coordinator"},
		{"backing_off", "[WARN]  host: disconnected from coordinator, backing off"},
		{"circuit_open", "[WARN]  host: circuit breaker open"},
		{"draining", "[INFO]  host: connector draining"},
		{"closed", "[INFO]  host: session closed"},
	}
	for _, tc := range cases {
		t.Run(tc.state, func(t *testing.T) {
			logs := &logBuffer{}
			h, err := New(testConfig(t, "e"), hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: logs}))
			require.NoError(t, err)
			require.NoError(t, h.handleState(&pb.StateChange{State: tc.state, Reason: "test reason"}))
			assert.Contains(t, logs.String(), tc.want)
			assert.NotContains(t, logs.String(), "unknown connection state")
		})
	}
}

func TestBackingOffWarnsOncePerOutage(t *testing.T) {
	logs := &logBuffer{}
	h, err := New(testConfig(t, "e"), hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: logs}))
	require.NoError(t, err)
	for _, state := range []string{"backing_off", "connecting", "backing_off", "circuit_open",
		"connecting", "backing_off"} {
		require.NoError(t, h.handleState(&pb.StateChange{State: state}))
	}
	assert.Equal(t, 1, strings.Count(logs.String(), "[WARN]  host: disconnected"))
	assert.Equal(t, 2, strings.Count(logs.String(), "[DEBUG] host: connection attempt failed"))

	require.NoError(t, h.handleState(&pb.StateChange{State: "connected"}))
	require.NoError(t, h.handleState(&pb.StateChange{State: "backing_off"}))
	assert.Equal(t, 2, strings.Count(logs.String(), "[WARN]  host: disconnected"),
		"a new outage after a connect warns again")
}

func TestResendDelayBounds(t *testing.T) {
	base, limit := 100*time.Millisecond, time.Second
	cases := []struct {
		failures int
		low      time.Duration
		high     time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second},
		{60, 500 * time.Millisecond, time.Second},
	}
	for _, tc := range cases {
		for range 50 {
			delay := resendDelay(tc.failures, base, limit)
			require.GreaterOrEqual(t, delay, tc.low, "failures %d", tc.failures)
			require.LessOrEqual(t, delay, tc.high, "failures %d", tc.failures)
		}
	}
}

func TestOutboxGet(t *testing.T) {
	outbox, err := OpenOutbox(filepath.Join(t.TempDir(), "outbox"))
	require.NoError(t, err)
	want := &wirepb.TaskOutcome{Ref: &wirepb.TaskRef{TaskId: "t1", Attempt: 2}, Output: []byte("ok")}
	require.NoError(t, outbox.Put(want))

	got, err := outbox.Get(taskRef{"t1", 2})
	require.NoError(t, err)
	assert.Equal(t, "ok", string(got.GetOutput()))

	_, err = outbox.Get(taskRef{"t1", 3})
	assert.ErrorIs(t, err, os.ErrNotExist)
}
