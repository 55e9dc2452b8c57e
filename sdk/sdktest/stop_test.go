package sdktest_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
	"github.com/dtf-io/dtf/sdk/sdktest"
)

// stoppableExecutor runs until its context ends and then saves a last
// checkpoint that names the context's cause.
type stoppableExecutor struct {
	started chan struct{}
	causes  chan error
	// checkpointErrs receives the error of the last checkpoint.
	checkpointErrs chan error
}

func newStoppable() *stoppableExecutor {
	return &stoppableExecutor{started: make(chan struct{}, 1), causes: make(chan error, 1),
		checkpointErrs: make(chan error, 1)}
}

func (e *stoppableExecutor) Info() sdk.Info {
	return sdk.Info{Name: "stoppable", Version: "1.0.0", TaskTypes: []string{"wait"}}
}

func (e *stoppableExecutor) Configure(json.RawMessage) error { return nil }

func (e *stoppableExecutor) Execute(ctx context.Context, _ sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	e.started <- struct{}{}
	<-ctx.Done()
	cause := context.Cause(ctx)
	e.causes <- cause
	e.checkpointErrs <- r.Checkpoint([]byte("last"), 0.4, "saved when stopped")
	return sdk.Result{}, ctx.Err()
}

func waitTask() sdk.Task {
	return sdk.Task{ID: "t-stop", Attempt: 2, Type: "wait", Payload: json.RawMessage(`{}`)}
}

// runAsync runs task on h in the background and returns its report.
func runAsync(h *sdktest.Harness, task sdk.Task) <-chan sdktest.Report {
	reports := make(chan sdktest.Report, 1)
	go func() {
		report, _ := h.Execute(context.Background(), task)
		reports <- report
	}()
	return reports
}

func TestReleaseKeepsStreamForLastCheckpoint(t *testing.T) {
	exec := newStoppable()
	h := sdktest.New(t, exec)
	reports := runAsync(h, waitTask())

	require.NoError(t, h.Release(context.Background(), waitTask(), "drain timeout passed"))
	cause := <-exec.causes
	assert.ErrorIs(t, cause, sdk.ErrReleased)
	assert.Contains(t, cause.Error(), "drain timeout passed")
	require.NoError(t, <-exec.checkpointErrs, "the stream closed before the last checkpoint")

	report := <-reports
	require.Len(t, report.Checkpoints, 1)
	assert.Equal(t, "last", string(report.Checkpoints[0].Data))
	assert.Equal(t, "saved when stopped", report.Checkpoints[0].Message)
	assert.Equal(t, sdk.StatusCancelled, report.Result.Status)
	assert.Equal(t, "cancelled: attempt released by the worker: drain timeout passed", report.Result.Message)
}

func TestCancelSetsCancelledCause(t *testing.T) {
	exec := newStoppable()
	h := sdktest.New(t, exec)
	reports := runAsync(h, waitTask())

	require.NoError(t, h.Cancel(context.Background(), waitTask(), "user cancelled"))
	cause := <-exec.causes
	assert.ErrorIs(t, cause, sdk.ErrCancelled)
	assert.NotErrorIs(t, cause, sdk.ErrReleased)
	require.NoError(t, <-exec.checkpointErrs)
	report := <-reports
	assert.Len(t, report.Checkpoints, 1)
	assert.Contains(t, report.Result.Message, "user cancelled")
}

func TestCallCancelGivesNoLastCheckpoint(t *testing.T) {
	exec := newStoppable()
	h := sdktest.New(t, exec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.Execute(ctx, waitTask())
		done <- err
	}()
	<-exec.started
	cancel()

	assert.ErrorIs(t, <-exec.causes, context.Canceled)
	assert.Error(t, <-exec.checkpointErrs, "a checkpoint after the call ended must fail")
	assert.Equal(t, codes.Canceled, status.Code(<-done))
}

func TestStopUnknownAttempt(t *testing.T) {
	h := sdktest.New(t, newStoppable())
	// The first call opens the connection, which may take longer than the
	// short timeout below.
	_, err := h.Info(context.Background())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = h.Release(ctx, waitTask(), "nothing runs")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the attempt did not start")
	assert.Contains(t, err.Error(), "task t-stop attempt 2 is not running in this executor")
}

func TestStopWithoutReasonRejected(t *testing.T) {
	server := sdk.NewExecutorServer(newStoppable())
	_, err := server.Stop(context.Background(), &pb.StopRequest{TaskId: "t-1", Attempt: 1})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, err.Error(), "stop reason STOP_REASON_UNSPECIFIED of task t-1 attempt 1")
}

// stubbornExecutor ignores its context until the test closes proceed.
type stubbornExecutor struct {
	started chan struct{}
	proceed chan struct{}
}

func (e *stubbornExecutor) Info() sdk.Info {
	return sdk.Info{Name: "stubborn", Version: "1.0.0", TaskTypes: []string{"wait"}}
}

func (e *stubbornExecutor) Configure(json.RawMessage) error { return nil }

func (e *stubbornExecutor) Execute(context.Context, sdk.Task, sdk.Reporter) (sdk.Result, error) {
	e.started <- struct{}{}
	<-e.proceed
	return sdk.Result{Status: sdk.StatusSucceeded}, nil
}

// An executor that ignores Release or Cancel has its call ended after
// StopGrace, as the worker host ends it.
func TestStopGraceEndsIgnoredStop(t *testing.T) {
	stops := map[string]func(*sdktest.Harness) error{
		"release": func(h *sdktest.Harness) error { return h.Release(context.Background(), waitTask(), "drain") },
		"cancel":  func(h *sdktest.Harness) error { return h.Cancel(context.Background(), waitTask(), "user") },
	}
	for name, stop := range stops {
		t.Run(name, func(t *testing.T) {
			exec := &stubbornExecutor{started: make(chan struct{}, 1), proceed: make(chan struct{})}
			h := sdktest.New(t, exec)
			assert.Equal(t, sdktest.HostStopGrace, h.StopGrace)
			h.StopGrace = 200 * time.Millisecond
			done := make(chan error, 1)
			go func() {
				_, err := h.Execute(context.Background(), waitTask())
				done <- err
			}()
			<-exec.started
			// Cleanups run last first, so this one runs before the
			// harness's Close, which then does not wait for the executor.
			t.Cleanup(func() { close(exec.proceed) })

			require.NoError(t, stop(h))
			select {
			case err := <-done:
				assert.ErrorIs(t, err, sdktest.ErrStopGraceExceeded)
				assert.Contains(t, err.Error(), "t-stop attempt 2")
			case <-time.After(5 * time.Second):
				t.Fatal("Execute still runs 5s after the stop, with a StopGrace of 200ms")
			}
		})
	}
}
