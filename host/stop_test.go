package host

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// stoppingExecutor serves "hold": it saves the checkpoint "early", runs
// until its context ends, reports the context's cause on causes, then
// saves the checkpoint "last" and returns the context's error.
type stoppingExecutor struct {
	causes chan error
	// withoutStop serves it as a plugin built before the Stop method.
	withoutStop bool
	// ignoreStop makes it wait for proceed after its context ended.
	ignoreStop bool
	proceed    chan struct{}
}

func newStoppingExecutor() *stoppingExecutor {
	return &stoppingExecutor{causes: make(chan error, 1), proceed: make(chan struct{})}
}

func (e *stoppingExecutor) Info() sdk.Info {
	return sdk.Info{Name: "stopping", Version: "test", TaskTypes: []string{"hold"}}
}

func (e *stoppingExecutor) Configure(json.RawMessage) error { return nil }

func (e *stoppingExecutor) Execute(ctx context.Context, _ sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	if err := r.Checkpoint([]byte("early"), 0.1, "early"); err != nil {
		return sdk.Result{}, err
	}
	<-ctx.Done()
	e.causes <- context.Cause(ctx)
	if e.ignoreStop {
		<-e.proceed
	}
	_ = r.Checkpoint([]byte("last"), 0.5, "saved when stopped")
	return sdk.Result{}, ctx.Err()
}

// server returns the gRPC service that fakePlugins registers.
func (e *stoppingExecutor) server() pb.ExecutorServer {
	inner := sdk.NewExecutorServer(e)
	if e.withoutStop {
		return &serverWithoutStop{inner: inner}
	}
	return inner
}

// serverWithoutStop serves an executor without the Stop method, as a
// plugin built before it does.
type serverWithoutStop struct {
	pb.UnimplementedExecutorServer
	inner *sdk.ExecutorServer
}

func (s *serverWithoutStop) Info(ctx context.Context, req *pb.Empty) (*pb.PluginInfo, error) {
	return s.inner.Info(ctx, req)
}

func (s *serverWithoutStop) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	return s.inner.Configure(ctx, req)
}

func (s *serverWithoutStop) Execute(req *pb.ExecuteRequest, stream grpc.ServerStreamingServer[pb.ExecuteEvent]) error {
	return s.inner.Execute(req, stream)
}

// startHolding starts a host on exec, assigns it one "hold" task and waits
// for its first checkpoint.
func startHolding(t *testing.T, drainTimeout time.Duration, exec *stoppingExecutor,
	options ...func(*Host),
) (*harness, *fakeConnector) {
	t.Helper()
	cfg := testConfig(t, "runner")
	cfg.DrainTimeout = drainTimeout
	hs := startHost(t, cfg, map[string]sdk.Executor{"runner": exec}, options...)
	c := nextConnector(t, hs)
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())
	c.frame(t, assignFrame("t1", 2, "hold"))
	early := expectFrame(t, c, "checkpoint").GetCheckpoint()
	require.Equal(t, "early", string(early.GetData()))
	return hs, c
}

func TestReleasedOutcomeCarriesLastCheckpoint(t *testing.T) {
	exec := newStoppingExecutor()
	hs, c := startHolding(t, 100*time.Millisecond, exec)

	hs.host.Drain("test drain")
	cause := <-exec.causes
	assert.ErrorIs(t, cause, sdk.ErrReleased)
	assert.Contains(t, cause.Error(), "drain_timeout of 100ms passed")

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.True(t, outcome.GetReleased())
	assert.Equal(t, wirepb.Status_STATUS_FAILED, outcome.GetStatus())
	assert.Contains(t, outcome.GetMessage(), "drain_timeout of 100ms passed")
	require.NotNil(t, outcome.GetCheckpoint(), "the released outcome carries no checkpoint")
	assert.Equal(t, "last", string(outcome.GetCheckpoint().GetData()))
	assert.EqualValues(t, 2, outcome.GetCheckpoint().GetSequence())
	assert.EqualValues(t, 2, outcome.GetCheckpoint().GetRef().GetAttempt())
}

func TestReleaseWithoutStopCancelsCall(t *testing.T) {
	exec := newStoppingExecutor()
	exec.withoutStop = true
	hs, c := startHolding(t, 100*time.Millisecond, exec)

	start := time.Now()
	hs.host.Drain("test drain")
	assert.ErrorIs(t, <-exec.causes, context.Canceled, "the call is cancelled, with no stop cause")

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Less(t, time.Since(start), defaultStopGrace/2, "the host waited for a result that cannot come")
	assert.True(t, outcome.GetReleased())
	require.NotNil(t, outcome.GetCheckpoint())
	assert.Equal(t, "early", string(outcome.GetCheckpoint().GetData()),
		"the checkpoint saved before the release is kept")
	assert.Contains(t, hs.logs.String(), "executor plugin has no Stop method")
}

func TestCancelTaskStopsThroughExecutor(t *testing.T) {
	exec := newStoppingExecutor()
	_, c := startHolding(t, time.Minute, exec)

	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_CancelTask{CancelTask: &wirepb.CancelTask{
		Ref: &wirepb.TaskRef{TaskId: "t1", Attempt: 2}, Reason: "user cancelled",
	}}})
	cause := <-exec.causes
	assert.ErrorIs(t, cause, sdk.ErrCancelled)
	assert.Contains(t, cause.Error(), "user cancelled")

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_CANCELLED, outcome.GetStatus())
	assert.Equal(t, "user cancelled", outcome.GetMessage())
	assert.False(t, outcome.GetReleased())
	require.NotNil(t, outcome.GetCheckpoint())
	assert.Equal(t, "last", string(outcome.GetCheckpoint().GetData()))
}

func TestStopGraceCancelsCall(t *testing.T) {
	exec := newStoppingExecutor()
	exec.ignoreStop = true
	hs, c := startHolding(t, 100*time.Millisecond, exec, func(h *Host) {
		h.stopGrace = 200 * time.Millisecond
	})
	t.Cleanup(func() { close(exec.proceed) })

	hs.host.Drain("test drain")
	assert.ErrorIs(t, <-exec.causes, sdk.ErrReleased)

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.True(t, outcome.GetReleased())
	require.NotNil(t, outcome.GetCheckpoint())
	assert.Equal(t, "early", string(outcome.GetCheckpoint().GetData()))
	assert.Contains(t, hs.logs.String(), "did not return the stopped attempt's result in time")
}

// An executor that ignores a cancel gets the stop grace: then the host
// warns once, naming the plugin and the attempt, reports the attempt
// cancelled and frees its slot.
func TestIgnoredCancelWarnsAndFreesSlot(t *testing.T) {
	exec := newStoppingExecutor()
	exec.ignoreStop = true
	hs, c := startHolding(t, time.Minute, exec, func(h *Host) {
		h.stopGrace = 200 * time.Millisecond
	})
	t.Cleanup(func() { close(exec.proceed) })
	require.Len(t, hs.host.slots, 1, "the held attempt takes a slot")

	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_CancelTask{CancelTask: &wirepb.CancelTask{
		Ref: &wirepb.TaskRef{TaskId: "t1", Attempt: 2}, Reason: "user cancelled",
	}}})
	assert.ErrorIs(t, <-exec.causes, sdk.ErrCancelled)

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_CANCELLED, outcome.GetStatus())
	assert.Equal(t, "user cancelled", outcome.GetMessage())
	require.Eventually(t, func() bool { return len(hs.host.slots) == 0 }, waitFor, 10*time.Millisecond,
		"the slot stays taken")

	warnings := linesWith(hs.logs.String(), "did not return the stopped attempt's result in time")
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "plugin=runner")
	assert.Contains(t, warnings[0], "task_id=t1")
	assert.Contains(t, warnings[0], "attempt=2")
}

// An executor that ignores its task timeout gets the timeout grace: then
// the host warns once, reports the attempt timed out and frees its slot.
func TestIgnoredTimeoutWarnsAndFreesSlot(t *testing.T) {
	exec := newStoppingExecutor()
	exec.ignoreStop = true
	hs := startHost(t, testConfig(t, "runner"), map[string]sdk.Executor{"runner": exec}, func(h *Host) {
		h.timeoutGrace = 200 * time.Millisecond
	})
	t.Cleanup(func() { close(exec.proceed) })
	c := nextConnector(t, hs)
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())
	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_Assign{Assign: &wirepb.Assign{
		Ref: &wirepb.TaskRef{TaskId: "t1", Attempt: 1}, Type: "hold", TimeoutMs: 100,
	}}})
	assert.Error(t, <-exec.causes, "the SDK ends the executor's context at the task timeout")

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_TIMED_OUT, outcome.GetStatus())
	assert.Contains(t, outcome.GetMessage(), "did not stop within the task timeout plus 200ms")
	require.Eventually(t, func() bool { return len(hs.host.slots) == 0 }, waitFor, 10*time.Millisecond,
		"the slot stays taken")

	warnings := linesWith(hs.logs.String(), "ignored the task timeout")
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "plugin=runner")
	assert.Contains(t, warnings[0], "task_id=t1")
}

// linesWith returns the lines of logs that contain text.
func linesWith(logs, text string) []string {
	var lines []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, text) {
			lines = append(lines, line)
		}
	}
	return lines
}
