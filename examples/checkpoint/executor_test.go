package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/sdk"
	"github.com/dtf-io/dtf/sdk/sdktest"
)

func task(attempt int, payload string, from *sdk.Checkpoint) sdk.Task {
	return sdk.Task{ID: "t-1", Attempt: attempt, Type: TaskType, Payload: json.RawMessage(payload),
		Checkpoint: from}
}

func report(t *testing.T, res sdk.Result) Report {
	t.Helper()
	var r Report
	require.NoError(t, json.Unmarshal(res.Data, &r))
	return r
}

func TestCountsAndCheckpointsEachStep(t *testing.T) {
	h := sdktest.New(t, NewExecutor())
	run, err := h.Execute(context.Background(), task(1, `{"steps":5,"interval_ms":1}`, nil))
	require.NoError(t, err)

	assert.Equal(t, sdk.StatusSucceeded, run.Result.Status)
	assert.Equal(t, "counted to 5 from the start", run.Result.Message)
	assert.Equal(t, Report{StartedAt: 0, Steps: 5}, report(t, run.Result))
	require.Len(t, run.Checkpoints, 5)
	for i, cp := range run.Checkpoints {
		assert.JSONEq(t, fmt.Sprintf(`{"step":%d}`, i+1), string(cp.Data))
		assert.InDelta(t, float64(i+1)/5, cp.Fraction, 1e-9)
	}
	assert.Equal(t, "step 5 of 5", run.LastCheckpoint().Message)
}

func TestResumesFromCheckpoint(t *testing.T) {
	h := sdktest.New(t, NewExecutor())
	ctx, cancel := context.WithCancel(context.Background())
	canceller := &cancelAfter{after: 3, cancel: cancel}

	// The first attempt is cancelled after its third checkpoint, as when
	// its worker dies.
	first, err := NewExecutor().Execute(ctx, task(1, `{"steps":6,"interval_ms":1}`, nil), canceller)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, sdk.Result{}, first)
	require.Len(t, canceller.saved, 3)
	last := &sdk.Checkpoint{Data: canceller.saved[2], Attempt: 1, Sequence: 3}

	second, err := h.Execute(context.Background(), task(2, `{"steps":6,"interval_ms":1}`, last))
	require.NoError(t, err)
	assert.Equal(t, sdk.StatusSucceeded, second.Result.Status)
	assert.Equal(t, "counted to 6, resumed after step 3", second.Result.Message)
	assert.Equal(t, Report{StartedAt: 3, Steps: 6, ResumedFrom: &CheckpointRef{Attempt: 1, Sequence: 3}},
		report(t, second.Result))
	require.Len(t, second.Checkpoints, 3, "only the remaining steps run")
	assert.JSONEq(t, `{"step":4}`, string(second.Checkpoints[0].Data))
	assert.Equal(t, 2, second.Checkpoints[0].Attempt)
}

func TestInvalidInput(t *testing.T) {
	h := sdktest.New(t, NewExecutor())
	cases := []struct {
		name    string
		payload string
		from    *sdk.Checkpoint
		message string
	}{
		{"not json", `steps`, nil, "invalid checkpoint payload"},
		{"unknown field", `{"steps":1,"speed":2}`, nil, `unknown field "speed"`},
		{"zero steps", `{"steps":0}`, nil, "steps is 0; use 1 to 1000000"},
		{"negative interval", `{"steps":1,"interval_ms":-1}`, nil, "interval_ms is -1"},
		{"negative checkpoint_every", `{"steps":1,"checkpoint_every":-1}`, nil,
			"checkpoint_every is -1; use 1 to 1000000, or 0 for every step"},
		{"corrupt checkpoint", `{"steps":3}`, &sdk.Checkpoint{Data: []byte("{"), Attempt: 1, Sequence: 2},
			"checkpoint 2 of attempt 1 has invalid data"},
		{"checkpoint past end", `{"steps":3}`, &sdk.Checkpoint{Data: []byte(`{"step":9}`), Attempt: 1, Sequence: 9},
			"is at step 9, outside 0 to 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run, err := h.Execute(context.Background(), task(1, tc.payload, tc.from))
			require.NoError(t, err)
			assert.Equal(t, sdk.StatusFailed, run.Result.Status)
			assert.Contains(t, run.Result.Message, tc.message)
			assert.Empty(t, run.Checkpoints)
		})
	}
}

func TestConfigureRejectsSettings(t *testing.T) {
	e := NewExecutor()
	require.NoError(t, e.Configure(nil))
	require.NoError(t, e.Configure(json.RawMessage(`{}`)))
	err := e.Configure(json.RawMessage(`{"steps":3}`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the plugin has no settings")
}

// cancelAfter is a Reporter that records checkpoint data and cancels the
// task's context after the given number of checkpoints.
type cancelAfter struct {
	after  int
	cancel context.CancelFunc

	mu    sync.Mutex
	saved [][]byte
}

func (c *cancelAfter) Progress(float64, string) {}

func (c *cancelAfter) Checkpoint(data []byte, _ float64, _ string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.saved = append(c.saved, append([]byte(nil), data...))
	if len(c.saved) == c.after {
		c.cancel()
	}
	return nil
}

func TestCheckpointEveryFewSteps(t *testing.T) {
	h := sdktest.New(t, NewExecutor())
	run, err := h.Execute(context.Background(), task(1, `{"steps":5,"checkpoint_every":2}`, nil))
	require.NoError(t, err)

	assert.Equal(t, sdk.StatusSucceeded, run.Result.Status)
	require.Len(t, run.Checkpoints, 3, "steps 2 and 4, and the last step")
	for i, step := range []int{2, 4, 5} {
		assert.JSONEq(t, fmt.Sprintf(`{"step":%d}`, step), string(run.Checkpoints[i].Data))
	}
	require.Len(t, run.Progress, 2)
	assert.Equal(t, "step 1 of 5", run.Progress[0].Message)
	assert.Equal(t, "step 3 of 5", run.Progress[1].Message)
}

func TestStopSavesStepReached(t *testing.T) {
	cases := []struct {
		name  string
		cause error
	}{
		{"released", fmt.Errorf("%w: drain timeout passed", sdk.ErrReleased)},
		{"cancelled", fmt.Errorf("%w: user cancelled", sdk.ErrCancelled)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			stopper := &stopAfterProgress{after: 3, stop: func() { cancel(tc.cause) }}

			// Without a stop the first checkpoint would come at step 1000.
			_, err := NewExecutor().Execute(ctx,
				task(1, `{"steps":2000,"interval_ms":1,"checkpoint_every":1000}`, nil), stopper)
			require.ErrorIs(t, err, context.Canceled)
			require.Len(t, stopper.checkpoints, 1, "one checkpoint, saved when stopped")
			saved := stopper.checkpoints[0]
			assert.JSONEq(t, `{"step":3}`, string(saved.Data))
			assert.Equal(t, "step 3 of 2000, saved when stopped", saved.Message)
			assert.InDelta(t, 3.0/2000, saved.Fraction, 1e-9)
		})
	}
}

func TestPlainCancelSavesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopper := &stopAfterProgress{after: 3, stop: cancel}
	_, err := NewExecutor().Execute(ctx, task(1, `{"steps":2000,"interval_ms":1,"checkpoint_every":1000}`, nil),
		stopper)
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, stopper.checkpoints, "without a stop from the host the stream is gone")
}

// stopAfterProgress is a Reporter that records checkpoints and calls stop
// after the given number of progress reports.
type stopAfterProgress struct {
	after int
	stop  func()

	mu          sync.Mutex
	progress    int
	checkpoints []sdk.Checkpoint
}

func (s *stopAfterProgress) Progress(float64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress++
	if s.progress == s.after {
		s.stop()
	}
}

func (s *stopAfterProgress) Checkpoint(data []byte, fraction float64, message string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkpoints = append(s.checkpoints, sdk.Checkpoint{
		Data: append([]byte(nil), data...), Fraction: fraction, Message: message,
	})
	return nil
}

// TestHarnessResumesFromLastCheckpoint runs both attempts through the
// harness, as the worker host runs them: the first one times out partway,
// and the second one starts from the newest checkpoint that the first one
// saved.
func TestHarnessResumesFromLastCheckpoint(t *testing.T) {
	h := sdktest.New(t, NewExecutor())
	first := task(1, `{"steps":100000,"interval_ms":2}`, nil)
	first.Timeout = 300 * time.Millisecond
	run1, err := h.Execute(context.Background(), first)
	require.NoError(t, err)
	require.Equal(t, sdk.StatusTimedOut, run1.Result.Status)
	last := run1.LastCheckpoint()
	require.NotNil(t, last, "the first attempt saved no checkpoint before its timeout")
	var reached State
	require.NoError(t, json.Unmarshal(last.Data, &reached))
	require.Positive(t, reached.Step)
	assert.Equal(t, 1, last.Attempt)
	assert.Equal(t, uint64(len(run1.Checkpoints)), last.Sequence)

	// The retry counts without a pause and checkpoints less often.
	run2, err := h.Execute(context.Background(),
		task(2, `{"steps":100000,"interval_ms":0,"checkpoint_every":10000}`, last))
	require.NoError(t, err)
	assert.Equal(t, sdk.StatusSucceeded, run2.Result.Status)
	assert.Equal(t, Report{StartedAt: reached.Step, Steps: 100000,
		ResumedFrom: &CheckpointRef{Attempt: 1, Sequence: last.Sequence}}, report(t, run2.Result))
	require.NotEmpty(t, run2.Checkpoints)
	for _, cp := range run2.Checkpoints {
		var state State
		require.NoError(t, json.Unmarshal(cp.Data, &state))
		assert.Greater(t, state.Step, reached.Step, "no step before the checkpoint runs again")
	}
	assert.JSONEq(t, `{"step":100000}`, string(run2.LastCheckpoint().Data))
}
