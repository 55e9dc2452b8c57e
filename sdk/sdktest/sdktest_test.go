package sdktest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/sdk"
	"github.com/dtf-io/dtf/sdk/sdktest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// scriptedExecutor runs the function named by the task's type.
type scriptedExecutor struct {
	configured json.RawMessage
	// reporter and oversizeErr are what the "checkpoint" task left behind.
	reporter    sdk.Reporter
	oversizeErr error
	started     chan struct{}
	stopped     chan struct{}
}

func newScripted() *scriptedExecutor {
	return &scriptedExecutor{started: make(chan struct{}, 1), stopped: make(chan struct{}, 1)}
}

func (e *scriptedExecutor) Info() sdk.Info {
	return sdk.Info{Name: "scripted", Version: "1.0.0", TaskTypes: []string{"ok", "error", "panic", "block", "checkpoint"}}
}

func (e *scriptedExecutor) Configure(config json.RawMessage) error {
	if string(config) == `{"bad":true}` {
		return errors.New("bad is not allowed")
	}
	e.configured = config
	return nil
}

func (e *scriptedExecutor) Execute(ctx context.Context, task sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	switch task.Type {
	case "ok":
		r.Progress(0.5, "half")
		r.Progress(2, "clamped")
		return sdk.Result{Status: sdk.StatusSucceeded, Message: task.ID, Output: task.Payload,
			Data: json.RawMessage(`{"attempt":` + jsonInt(task.Attempt) + `}`)}, nil
	case "error":
		return sdk.Result{}, errors.New("payload is not an object")
	case "panic":
		panic("boom")
	case "checkpoint":
		return e.checkpoint(task, r)
	case "block":
		e.started <- struct{}{}
		<-ctx.Done()
		e.stopped <- struct{}{}
		return sdk.Result{}, ctx.Err()
	}
	return sdk.Result{Status: "", Message: "no status"}, nil
}

// checkpoint saves three checkpoints after the one it resumes from, then
// tries one over the size limit, and returns where it started.
func (e *scriptedExecutor) checkpoint(task sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	start := 0
	if task.Checkpoint != nil {
		if err := json.Unmarshal(task.Checkpoint.Data, &start); err != nil {
			return sdk.Result{}, err
		}
	}
	for step := start + 1; step <= start+3; step++ {
		if err := r.Checkpoint([]byte(jsonInt(step)), float64(step)/10, "step "+jsonInt(step)); err != nil {
			return sdk.Result{}, err
		}
	}
	e.oversizeErr = r.Checkpoint(make([]byte, sdk.MaxCheckpointBytes+1), 1, "too large")
	e.reporter = r
	return sdk.Result{Status: sdk.StatusSucceeded, Message: "started at " + jsonInt(start)}, nil
}

func jsonInt(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestHarnessInfoAndConfigure(t *testing.T) {
	exec := newScripted()
	h := sdktest.New(t, exec)
	ctx := context.Background()

	info, err := h.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, "scripted", info.Name)
	assert.Equal(t, []string{"ok", "error", "panic", "block", "checkpoint"}, info.TaskTypes)

	require.NoError(t, h.Configure(ctx, json.RawMessage(`{"a":1}`)))
	assert.JSONEq(t, `{"a":1}`, string(exec.configured))

	err = h.Configure(ctx, json.RawMessage(`{"bad":true}`))
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, err.Error(), "bad is not allowed")
}

func TestHarnessRun(t *testing.T) {
	h := sdktest.New(t, newScripted())
	tests := []struct {
		name        string
		task        sdk.Task
		wantStatus  sdk.Status
		wantMessage string
	}{
		{"succeeded", sdk.Task{ID: "t1", Attempt: 2, Type: "ok", Payload: json.RawMessage(`{"x":1}`)},
			sdk.StatusSucceeded, "t1"},
		{"error becomes failed", sdk.Task{ID: "t2", Type: "error"}, sdk.StatusFailed, "payload is not an object"},
		{"panic becomes failed", sdk.Task{ID: "t3", Type: "panic"}, sdk.StatusFailed, "executor panicked: boom"},
		{"missing status", sdk.Task{ID: "t4", Type: "other"}, sdk.StatusFailed, "without a status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			result, _, err := h.Run(context.Background(), tt.task)
			require.NoError(t, err)
			assert.Equal(t, tt.wantStatus, result.Status)
			assert.Contains(t, result.Message, tt.wantMessage)
		})
	}
}

func TestHarnessRunProgressAndData(t *testing.T) {
	h := sdktest.New(t, newScripted())
	result, progress, err := h.Run(context.Background(),
		sdk.Task{ID: "t1", Attempt: 3, Type: "ok", Payload: json.RawMessage(`{"x":1}`)})
	require.NoError(t, err)
	assert.Equal(t, []sdktest.Progress{{Fraction: 0.5, Message: "half"}, {Fraction: 1, Message: "clamped"}}, progress)
	assert.JSONEq(t, `{"x":1}`, string(result.Output))
	assert.JSONEq(t, `{"attempt":3}`, string(result.Data))
}

func TestHarnessRunCancel(t *testing.T) {
	exec := newScripted()
	h := sdktest.New(t, exec)
	ctx, cancel := context.WithCancel(context.Background())
	errCh := make(chan error, 1)
	go func() {
		_, _, err := h.Run(ctx, sdk.Task{ID: "t1", Type: "block"})
		errCh <- err
	}()

	waitFor(t, exec.started, "task start")
	cancel()
	waitFor(t, exec.stopped, "task stop after cancel")
	err := <-errCh
	assert.Equal(t, codes.Canceled, status.Code(err))
}

func TestHarnessCloseCancelsTasks(t *testing.T) {
	exec := newScripted()
	h := sdktest.New(t, exec)
	errCh := make(chan error, 1)
	go func() {
		_, _, err := h.Run(context.Background(), sdk.Task{ID: "t1", Type: "block"})
		errCh <- err
	}()

	waitFor(t, exec.started, "task start")
	h.Close()
	waitFor(t, exec.stopped, "task stop after close")
	<-errCh
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestHarnessCheckpointsAndResume(t *testing.T) {
	exec := newScripted()
	h := sdktest.New(t, exec)
	ctx := context.Background()

	first, err := h.Execute(ctx, sdk.Task{ID: "t-1", Attempt: 1, Type: "checkpoint"})
	require.NoError(t, err)
	assert.Equal(t, "started at 0", first.Result.Message)
	require.Len(t, first.Checkpoints, 3)
	for i, cp := range first.Checkpoints {
		assert.Equal(t, 1, cp.Attempt, "checkpoint %d attempt", i)
		assert.Equal(t, uint64(i+1), cp.Sequence, "checkpoint %d sequence", i)
	}
	last := first.LastCheckpoint()
	require.NotNil(t, last)
	assert.Equal(t, "3", string(last.Data))
	assert.InDelta(t, 0.3, last.Fraction, 1e-9)
	assert.Equal(t, "step 3", last.Message)

	// The oversized checkpoint failed in the executor and was never sent.
	require.ErrorIs(t, exec.oversizeErr, sdk.ErrCheckpointTooLarge)
	assert.Contains(t, exec.oversizeErr.Error(), "1048577 bytes")
	assert.Contains(t, exec.oversizeErr.Error(), "limit is 1048576 bytes")

	// After the result, a checkpoint fails instead of vanishing.
	err = exec.reporter.Checkpoint([]byte("late"), 1, "late")
	require.ErrorIs(t, err, sdk.ErrAttemptFinished)

	second, err := h.Execute(ctx, sdk.Task{ID: "t-1", Attempt: 2, Type: "checkpoint", Checkpoint: last})
	require.NoError(t, err)
	assert.Equal(t, "started at 3", second.Result.Message)
	require.NotNil(t, second.LastCheckpoint())
	assert.Equal(t, "6", string(second.LastCheckpoint().Data))
	assert.Equal(t, 2, second.LastCheckpoint().Attempt)
}

// bigResult returns a result over the output and message bounds.
type bigResult struct{}

func (bigResult) Info() sdk.Info                  { return sdk.Info{Name: "big", TaskTypes: []string{"big"}} }
func (bigResult) Configure(json.RawMessage) error { return nil }
func (bigResult) Execute(context.Context, sdk.Task, sdk.Reporter) (sdk.Result, error) {
	return sdk.Result{
		Status:  sdk.StatusSucceeded,
		Message: "line one\nline two",
		Output:  append(bytes.Repeat([]byte("x"), 5_000_000), "end"...),
	}, nil
}

func TestHarnessBoundsResult(t *testing.T) {
	h := sdktest.New(t, bigResult{})
	report, err := h.Execute(context.Background(), sdk.Task{ID: "t", Attempt: 1, Type: "big"})
	require.NoError(t, err)
	assert.Len(t, report.Result.Output, 1<<20)
	assert.True(t, bytes.HasSuffix(report.Result.Output, []byte("end")))
	assert.True(t, strings.HasPrefix(report.Result.Message, "line one / line two ["), report.Result.Message)
	require.Len(t, report.Bounded, 1)
	assert.Contains(t, report.Bounded[0], "output cut to its last 1048576 of 5000003 bytes")
}
