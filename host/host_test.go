package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitFor = 10 * time.Second

// chattyReports is the number of progress reports of a "chatty" task.
const chattyReports = 20

// testExecutor serves the types it is given: "echo" returns the payload,
// "block" runs until cancelled, "chatty" reports progress chattyReports
// times and succeeds, "gate" reports progress and succeeds once gate is
// closed.
type testExecutor struct {
	name  string
	types []string
	gate  chan struct{}
}

func (e *testExecutor) Info() sdk.Info {
	return sdk.Info{Name: e.name, Version: "test", TaskTypes: e.types}
}

func (e *testExecutor) Configure(json.RawMessage) error { return nil }

func (e *testExecutor) Execute(ctx context.Context, task sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	switch task.Type {
	case "block":
		r.Progress(0.1, "blocking")
		<-ctx.Done()
		return sdk.Result{Status: sdk.StatusCancelled, Message: "stopped"}, nil
	case "gate":
		r.Progress(0.1, "waiting for the gate")
		select {
		case <-e.gate:
			return sdk.Result{Status: sdk.StatusSucceeded, Message: "gate opened"}, nil
		case <-ctx.Done():
			return sdk.Result{Status: sdk.StatusCancelled, Message: "stopped"}, nil
		}
	case "chatty":
		for i := range chattyReports {
			r.Progress(float64(i)/chattyReports, fmt.Sprintf("step %d", i))
		}
		return sdk.Result{Status: sdk.StatusSucceeded}, nil
	default:
		r.Progress(0.5, "halfway")
		return sdk.Result{Status: sdk.StatusSucceeded, Output: task.Payload}, nil
	}
}

func testConfig(t *testing.T, executors ...string) *config.Config {
	cfg := &config.Config{
		DataDir:         t.TempDir(),
		Slots:           2,
		LogLevel:        "debug",
		ShutdownTimeout: 5 * time.Second,
		Coordinator:     config.Coordinator{URL: "ws://127.0.0.1:1", WorkerID: "worker-t"},
		Plugins:         []config.Plugin{{Name: "reconnection", Kind: dtfplugin.KindConnector}},
	}
	for _, name := range executors {
		cfg.Plugins = append(cfg.Plugins, config.Plugin{Name: name, Kind: dtfplugin.KindExecutor})
	}
	return cfg
}

type harness struct {
	host    *Host
	plugins *fakePlugins
	cancel  context.CancelFunc
	done    chan error
	logs    *logBuffer
}

// startHost runs a host on fake plugins. Each option changes the host
// before it runs.
func startHost(
	t *testing.T,
	cfg *config.Config,
	executors map[string]sdk.Executor,
	options ...func(*Host),
) *harness {
	t.Helper()
	logs := &logBuffer{}
	h, err := New(cfg, hclog.New(&hclog.LoggerOptions{
		Level: hclog.Debug, Output: io.MultiWriter(testWriter{t}, logs),
	}))
	require.NoError(t, err)
	for _, option := range options {
		option(h)
	}
	plugins := &fakePlugins{t: t, connectors: make(chan *fakeConnector, 8), executors: executors}
	h.launch = plugins.launch
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	hs := &harness{host: h, plugins: plugins, cancel: cancel, done: done, logs: logs}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Error("host did not stop")
		}
	})
	return hs
}

func (hs *harness) stop(t *testing.T) error {
	hs.cancel()
	select {
	case err := <-hs.done:
		hs.done <- err // let Cleanup read it too
		return err
	case <-time.After(waitFor):
		t.Fatal("host did not stop")
		return nil
	}
}

func nextConnector(t *testing.T, hs *harness) *fakeConnector {
	t.Helper()
	select {
	case c := <-hs.plugins.connectors:
		return c
	case <-time.After(waitFor):
		t.Fatal("no connector launched")
		return nil
	}
}

// expectFrame returns the next frame of frameType that the host sent,
// skipping frames of other types.
func expectFrame(t *testing.T, c *fakeConnector, frameType string) *wirepb.Frame {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case frame := <-c.sent:
			if protocol.TypeOf(frame) == frameType {
				return frame
			}
		case <-deadline:
			t.Fatalf("host sent no %s frame", frameType)
			return nil
		}
	}
}

func assignFrame(taskID string, attempt uint32, taskType string) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_Assign{Assign: &wirepb.Assign{
		Ref: &wirepb.TaskRef{TaskId: taskID, Attempt: attempt}, Type: taskType, Payload: []byte(`{"n":1}`),
	}}}
}

func ackFrame(taskID string, attempt uint32) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_OutcomeAck{OutcomeAck: &wirepb.OutcomeAck{
		Ref: &wirepb.TaskRef{TaskId: taskID, Attempt: attempt}, Applied: true,
	}}}
}

func syncResultFrame(cancel ...*wirepb.TaskRef) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_StateSyncResult{StateSyncResult: &wirepb.StateSyncResult{Cancel: cancel}}}
}

func outboxFiles(t *testing.T, cfg *config.Config) []string {
	entries, err := os.ReadDir(filepath.Join(cfg.DataDir, "outbox"))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestHandlersCoverProtocol(t *testing.T) {
	handled := map[string]bool{}
	for _, frameType := range HandledFrameTypes() {
		handled[frameType] = true
	}
	for _, frameType := range protocol.Types() {
		direction := protocol.Directions[frameType]
		if protocol.SessionTypes[frameType] || direction == protocol.ToCoordinator {
			assert.False(t, handled[frameType], "host handles %s, which it never receives", frameType)
			continue
		}
		assert.True(t, handled[frameType], "no host handler for frame type %s", frameType)
	}
}

func TestHostTaskFlow(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{"echo-runner": &testExecutor{name: "echo", types: []string{"echo"}}})
	c := nextConnector(t, hs)

	configured := <-c.configured
	assert.Equal(t, []string{"echo"}, configured.GetTaskTypes())
	assert.Equal(t, "worker-t", configured.GetWorkerId())
	assert.EqualValues(t, 2, configured.GetSlots())

	c.state("connected", "")
	sync := expectFrame(t, c, "state_sync").GetStateSync()
	assert.Empty(t, sync.GetRunning())
	assert.Empty(t, sync.GetHeldOutcomes())
	c.frame(t, syncResultFrame())

	c.frame(t, assignFrame("t1", 1, "echo"))
	started := expectFrame(t, c, "task_started").GetTaskStarted()
	assert.Equal(t, "t1", started.GetRef().GetTaskId())
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_SUCCEEDED, outcome.GetStatus())
	assert.JSONEq(t, `{"n":1}`, string(outcome.GetOutput()))
	assert.Equal(t, []string{"t1-1.json"}, outboxFiles(t, cfg))

	c.frame(t, ackFrame("t1", 1))
	require.Eventually(t, func() bool { return len(outboxFiles(t, cfg)) == 0 }, waitFor, 10*time.Millisecond)

	c.frame(t, assignFrame("t2", 1, "unknown-type"))
	failed := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_FAILED, failed.GetStatus())
	assert.Contains(t, failed.GetMessage(), `no executor for task type "unknown-type"`)

	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_Welcome{Welcome: &wirepb.Welcome{}}})
	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_Welcome{Welcome: &wirepb.Welcome{}}})
	require.Eventually(t, func() bool { return hs.host.UnknownFrames()["welcome"] == 2 }, waitFor, 10*time.Millisecond)

	require.NoError(t, hs.stop(t))
	<-c.stopped
	assert.True(t, hs.plugins.allKilled())
}

func TestHostCancelTask(t *testing.T) {
	cfg := testConfig(t, "runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{"runner": &testExecutor{name: "r", types: []string{"block"}}})
	c := nextConnector(t, hs)
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())

	c.frame(t, assignFrame("t1", 3, "block"))
	progress := expectFrame(t, c, "task_progress").GetTaskProgress()
	assert.Equal(t, "blocking", progress.GetMessage())

	// A reconnect reports the attempt as running.
	c.state("connected", "")
	sync := expectFrame(t, c, "state_sync").GetStateSync()
	require.Len(t, sync.GetRunning(), 1)
	assert.Equal(t, "t1", sync.GetRunning()[0].GetTaskId())

	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_CancelTask{CancelTask: &wirepb.CancelTask{
		Ref: &wirepb.TaskRef{TaskId: "t1", Attempt: 3}, Reason: "user cancelled",
	}}})
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_CANCELLED, outcome.GetStatus())
	assert.EqualValues(t, 3, outcome.GetRef().GetAttempt())
}

func TestHostStopReleasesRunningTask(t *testing.T) {
	cfg := testConfig(t, "runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{"runner": &testExecutor{name: "r", types: []string{"block"}}})
	c := nextConnector(t, hs)
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	c.frame(t, assignFrame("t1", 1, "block"))
	expectFrame(t, c, "task_progress")

	require.NoError(t, hs.stop(t))
	draining := expectFrame(t, c, "draining").GetDraining()
	assert.Equal(t, "stopping", draining.GetReason())
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "t1", outcome.GetRef().GetTaskId())
	assert.True(t, outcome.GetReleased(), "an attempt cut short by a stop is released")
	assert.True(t, outcome.GetRetryable())
	assert.Equal(t, wirepb.Status_STATUS_FAILED, outcome.GetStatus())
	assert.Equal(t, []string{"t1-1.json"}, outboxFiles(t, cfg),
		"the released outcome stays in the outbox until it is acknowledged")
	assert.True(t, hs.plugins.allKilled())
}

func TestHostResendsHeldOutcomes(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	outbox, err := OpenOutbox(filepath.Join(cfg.DataDir, "outbox"))
	require.NoError(t, err)
	require.NoError(t, outbox.Put(&wirepb.TaskOutcome{
		Ref: &wirepb.TaskRef{TaskId: "old", Attempt: 2}, Status: wirepb.Status_STATUS_FAILED,
	}))

	hs := startHost(t, cfg, map[string]sdk.Executor{"echo-runner": &testExecutor{name: "e", types: []string{"echo"}}})
	c := nextConnector(t, hs)

	// An outcome produced while no session is open stays in the outbox.
	c.unavailable.Store(true)
	c.frame(t, assignFrame("t1", 1, "echo"))
	// The file is written before the host holds the outcome, so wait for
	// both before the state sync lists held outcomes.
	require.Eventually(t, func() bool {
		return len(outboxFiles(t, cfg)) == 2 && hs.host.isHeld(taskRef{"t1", 1})
	}, waitFor, 10*time.Millisecond)
	c.unavailable.Store(false)

	c.state("connected", "")
	sync := expectFrame(t, c, "state_sync").GetStateSync()
	require.Len(t, sync.GetHeldOutcomes(), 2)
	assert.Equal(t, "old", sync.GetHeldOutcomes()[0].GetTaskId())
	assert.Equal(t, "t1", sync.GetHeldOutcomes()[1].GetTaskId())

	c.frame(t, syncResultFrame())
	first := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	second := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "old", first.GetRef().GetTaskId())
	assert.Equal(t, "t1", second.GetRef().GetTaskId())

	c.frame(t, ackFrame("old", 2))
	c.frame(t, ackFrame("t1", 1))
	require.Eventually(t, func() bool { return len(outboxFiles(t, cfg)) == 0 }, waitFor, 10*time.Millisecond)
}

// A held outcome that the state sync result lists as applied is deleted
// without being sent again; the others are sent.
func TestHostDropsOutcomesAppliedBeforeSync(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	outbox, err := OpenOutbox(filepath.Join(cfg.DataDir, "outbox"))
	require.NoError(t, err)
	applied := &wirepb.TaskRef{TaskId: "a-applied", Attempt: 2}
	require.NoError(t, outbox.Put(&wirepb.TaskOutcome{Ref: applied, Status: wirepb.Status_STATUS_SUCCEEDED}))
	require.NoError(t, outbox.Put(&wirepb.TaskOutcome{
		Ref: &wirepb.TaskRef{TaskId: "b-held", Attempt: 1}, Status: wirepb.Status_STATUS_FAILED,
	}))

	hs := startHost(t, cfg, map[string]sdk.Executor{"echo-runner": &testExecutor{name: "e", types: []string{"echo"}}})
	c := nextConnector(t, hs)
	c.state("connected", "")
	sync := expectFrame(t, c, "state_sync").GetStateSync()
	require.Len(t, sync.GetHeldOutcomes(), 2)

	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_StateSyncResult{StateSyncResult: &wirepb.StateSyncResult{
		Applied: []*wirepb.TaskRef{applied},
	}}})
	sent := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "b-held", sent.GetRef().GetTaskId(), "the applied outcome is not sent again")
	assert.Equal(t, []string{"b-held-1.json"}, outboxFiles(t, cfg))
	assert.False(t, hs.host.isHeld(taskRef{"a-applied", 2}))

	c.frame(t, ackFrame("b-held", 1))
	require.Eventually(t, func() bool { return len(outboxFiles(t, cfg)) == 0 }, waitFor, 10*time.Millisecond)
}

func TestHostRestartsConnector(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{"echo-runner": &testExecutor{name: "e", types: []string{"echo"}}})
	first := nextConnector(t, hs)
	first.state("connected", "")
	expectFrame(t, first, "state_sync")

	close(first.crash)
	second := nextConnector(t, hs)
	<-second.configured
	second.state("connected", "")
	expectFrame(t, second, "state_sync")
}

func TestHostFatalClose(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{"echo-runner": &testExecutor{name: "e", types: []string{"echo"}}})
	c := nextConnector(t, hs)
	c.state("closed", "fatal: unauthenticated 5 times")
	select {
	case err := <-hs.done:
		hs.done <- err
		require.ErrorIs(t, err, ErrConnectorFatal)
		assert.Contains(t, err.Error(), "unauthenticated")
	case <-time.After(waitFor):
		t.Fatal("host did not stop on a fatal close")
	}
	assert.True(t, hs.plugins.allKilled())
}

func TestHostDuplicateTaskType(t *testing.T) {
	cfg := testConfig(t, "a", "b")
	hs := startHost(t, cfg, map[string]sdk.Executor{
		"a": &testExecutor{name: "a", types: []string{"echo"}},
		"b": &testExecutor{name: "b", types: []string{"other", "echo"}},
	})
	select {
	case err := <-hs.done:
		hs.done <- err
		require.Error(t, err)
		assert.Contains(t, err.Error(), `task type "echo" is declared by executor plugins a and b`)
	case <-time.After(waitFor):
		t.Fatal("host did not fail on a duplicate task type")
	}
	assert.True(t, hs.plugins.allKilled())
}

// logBuffer collects log output for checks; it is safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func TestSecondHostOnSameDataDirFails(t *testing.T) {
	cfg := testConfig(t, "runner")
	first := startHost(t, cfg, map[string]sdk.Executor{"runner": &testExecutor{name: "r", types: []string{"block"}}})
	nextConnector(t, first)

	second, err := New(cfg, hclog.NewNullLogger())
	require.NoError(t, err)
	err = second.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is in use by another worker")
	assert.Contains(t, err.Error(), cfg.DataDir)
}
